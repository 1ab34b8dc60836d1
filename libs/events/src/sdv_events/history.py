"""Every service serves its own event history over the bus: `sdv.cmd.<service>.history`.

PostgreSQL is the source of truth, JetStream only a carrier with a retention limit: auditors, the
monitor and consumers healing a gap in a stream read a service's events from its own store,
here. A query selects by stream (from a version), by category, by position range (`after`
exclusive, `to` inclusive) and by recording time (`since` inclusive, `until` exclusive); a page
holds at most `limit` events and at most `PAGE_BYTES` of JSON (but always one event, so any
stored event can be read), in commit order, with each event's metadata (actor, correlation,
causation, trace) and `recorded_at`. `next_after` is where the next page starts; since positions
become visible in commit order, polling with it later never skips an event.

The server relays each body as stored, undecoded; the client decodes it with its own registry,
so upcasting old versions happens at the reader (`HistoryEvent.envelope`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import msgspec
import structlog
from nats.aio.client import Client as NatsClient

from sdv_events.bus.rpc import (
    CommandClient,
    Handler,
    InvalidRequest,
    RequestInfo,
    ServiceUnavailable,
)
from sdv_events.codec import WireEnvelope, decode_body, decode_metadata
from sdv_events.envelope import Envelope
from sdv_events.ids import InvalidStreamId, split_stream_id
from sdv_events.registry import EventRegistry, default_registry
from sdv_events.store.reads import EventFilter, RecordedEvent

if TYPE_CHECKING:  # a client reading history does not need asyncpg
    from sdv_events.store.postgres import EventStore

log = structlog.get_logger("sdv.history")

HISTORY_COMMAND = "history"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# A page's JSON stays under this (NATS refuses payloads over 1 MiB by default), unless its one
# event alone is larger: the store bounds events at 256 KiB by default (900,000 bytes at most).
PAGE_BYTES = 512 * 1024
# Upper bound of a `HistoryEvent`'s JSON beyond its body, metadata, stream id and type: field
# names, the id, numbers, two timestamps (tests/integration/test_history.py checks it).
EVENT_OVERHEAD_BYTES = 384
# The reply envelope around the page (`{"status":"ok","result":{"events":[…],…}}`).
_PAGE_OVERHEAD_BYTES = 256
_CATEGORY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MAX_POSITION = 2**63 - 1  # bigint
_MAX_VERSION = 2**31 - 1  # integer

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class HistoryQuery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Which events, and how many per page. Filters combine (AND); `stream_id` and `category`
    exclude each other; `from_version` needs `stream_id`."""

    stream_id: str | None = None
    from_version: int = 1
    category: str | None = None
    after: int = 0
    to: int | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = DEFAULT_LIMIT


class HistoryEvent(WireEnvelope, frozen=True, kw_only=True):
    """One recorded event as the history serves it: the envelope as on the bus (the body still
    JSON, `data`) and when the store recorded it."""

    recorded_at: datetime

    def envelope(self, registry: EventRegistry = default_registry) -> Envelope:
        """The typed envelope (old versions upcast); `DecodeError` for a type `registry` does
        not know (a newer version than this reader)."""
        return Envelope(
            event_id=self.event_id, stream_id=self.stream_id, version=self.version,
            type=self.type, schema_version=self.schema_version, occurred_at=self.occurred_at,
            data=decode_body(self.type, bytes(self.data), registry=registry, path="$.data"),
            correlation_id=self.correlation_id, causation_id=self.causation_id,
            actor=self.actor, trace=self.trace, position=self.position,
        )


class HistoryPage(msgspec.Struct, frozen=True, kw_only=True):
    """`events` in commit order; ask again with `after=next_after` while `more` (and later,
    to follow what is appended since)."""

    events: list[HistoryEvent]
    next_after: int
    more: bool


def _invalid(reason: str, field: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, details={"reason": reason, "field": field})


def check_query(query: HistoryQuery) -> EventFilter:
    """The store filter a query means, or `InvalidRequest` naming the reason and field."""
    if not 1 <= query.limit <= MAX_LIMIT:
        raise _invalid("limit_out_of_bounds", "limit",
                       f"limit must be between 1 and {MAX_LIMIT}, got {query.limit}")
    if query.after < 0:
        raise _invalid("negative_position", "after", f"after must be ≥ 0, got {query.after}")
    for field, value, bound in (("after", query.after, _MAX_POSITION),
                                ("to", query.to or 0, _MAX_POSITION),
                                ("from_version", query.from_version, _MAX_VERSION)):
        if value > bound:
            raise _invalid("out_of_range", field, f"{field} must be ≤ {bound}, got {value}")
    if query.to is not None and query.to < query.after:
        raise _invalid("inverted_range", "to",
                       f"position range inverted: to={query.to} is before after={query.after}")
    if query.since is not None and query.until is not None and query.until < query.since:
        raise _invalid("inverted_range", "until",
                       f"time range inverted: until={query.until.isoformat()} is before "
                       f"since={query.since.isoformat()}")
    if query.from_version < 1:
        raise _invalid("bad_version", "from_version",
                       f"from_version must be ≥ 1, got {query.from_version}")
    if query.stream_id is not None:
        try:
            split_stream_id(query.stream_id)
        except InvalidStreamId as exc:
            raise _invalid("bad_stream_id", "stream_id", str(exc)) from None
        if query.category is not None:
            raise _invalid("conflicting_filters", "category",
                           "give either stream_id or category, not both")
    elif query.from_version != 1:
        raise _invalid("conflicting_filters", "from_version", "from_version needs a stream_id")
    if query.category is not None and not _CATEGORY_RE.fullmatch(query.category):
        raise _invalid("bad_category", "category",
                       f"invalid category {query.category!r}: a lowercase letter, then up to 31 "
                       "lowercase letters, digits or '_'")
    return EventFilter(to=query.to, stream_id=query.stream_id, from_version=query.from_version,
                       category=query.category, since=query.since, until=query.until)


def history_event(record: RecordedEvent) -> HistoryEvent:
    meta = decode_metadata(record.metadata)
    return HistoryEvent(
        position=record.position, event_id=record.event_id, stream_id=record.stream_id,
        version=record.version, type=record.type, schema_version=record.schema_version,
        occurred_at=record.occurred_at, recorded_at=record.recorded_at,
        data=msgspec.Raw(record.data), correlation_id=meta.correlation_id,
        causation_id=meta.causation_id, actor=meta.actor, trace=meta.trace,
    )


def history_handler(store: EventStore, *, page_bytes: int = PAGE_BYTES) -> Handler[HistoryQuery]:
    """The `history` command of the service owning `store` (registered by `run_service`)."""

    async def history(query: HistoryQuery, info: RequestInfo) -> HistoryPage:
        where = check_query(query)
        try:
            records, more = await store.read_page(
                query.after, where, limit=query.limit,
                max_bytes=page_bytes - _PAGE_OVERHEAD_BYTES, overhead=EVENT_OVERHEAD_BYTES,
            )
        except TimeoutError as exc:  # an append left open holds the safe head back
            raise ServiceUnavailable(f"history not readable yet, try again: {exc}") from None
        next_after = records[-1].position if records else query.after
        log.debug("history_page", actor=info.actor, events=len(records), after=query.after,
                  next_after=next_after, more=more)
        return HistoryPage(events=[history_event(r) for r in records], next_after=next_after,
                           more=more)

    return history


async def history_pages(
    client: CommandClient | NatsClient, service: str, query: HistoryQuery, *,
    timeout: float | None = None,
) -> AsyncIterator[HistoryPage]:
    """Every page of `service`'s history matching `query`, until one says there is no more."""
    commands = client if isinstance(client, CommandClient) else CommandClient(client)
    while True:
        page = await commands.call(service, HISTORY_COMMAND, query, HistoryPage, timeout=timeout)
        yield page
        if not page.more:
            return
        query = msgspec.structs.replace(query, after=page.next_after)


async def read_history(
    client: CommandClient | NatsClient, service: str, query: HistoryQuery, *,
    registry: EventRegistry = default_registry, timeout: float | None = None,
) -> AsyncIterator[Envelope]:
    """`service`'s events matching `query`, decoded, in commit order, paging as needed:
    `read_history(nc, owner_of(stream), HistoryQuery(stream_id=stream, from_version=v))` heals
    a gap in a stream from its owning store."""
    async for page in history_pages(client, service, query, timeout=timeout):
        for event in page.events:
            yield event.envelope(registry)
