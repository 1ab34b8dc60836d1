"""Rebuild a read model from PostgreSQL alone, into a shadow schema swapped in at the end.

The service's own events come from its event store (`EventStore.read_all`: positions become
visible in commit order, so reading until nothing more is new misses nothing); events of
categories another service owns come from that service's history over the bus. The projection
builds its tables in `<schema>_rebuild_<name>`; then one transaction drops the live tables,
moves the shadow ones in (`ALTER TABLE … SET SCHEMA`), replaces the consumer's stream versions
and sets its JetStream checkpoint to the stream's last sequence as seen *before* reading began:
everything published up to there was committed to a store before the read, and whatever comes
later is delivered to the live consumer and deduped by version. Readers see the old model until
that commit and the whole new one after it, never half of one.

The rebuild leads the consumer while it runs (the live runner of this process pauses between
batches; a runner elsewhere makes it refuse with `ConsumerBusy`), so no event is lost meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

import asyncpg
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from sdv_events.envelope import Envelope
from sdv_events.errors import SdvError
from sdv_events.history import MAX_LIMIT, HistoryQuery, read_history
from sdv_events.processing.categories import is_versioned
from sdv_events.processing.ledger import Handled, Ledger
from sdv_events.processing.processor import (
    AppliesBatches,
    Projection,
    SeedsShadow,
    WithSideEffects,
    category_of_subject,
    subject_matches,
)
from sdv_events.registry import EventRegistry
from sdv_events.store.postgres import EventStore, pooled_session
from sdv_events.stream_owners import owner_of
from sdv_events.subjects import event_subject


class ConsumerRunner(Protocol):
    """What a rebuild uses of the consumer runner it rebuilds (runner.py's `ConsumerRunner`,
    which calls this module: a protocol here keeps the import one way)."""

    name: str
    schema: str
    stream: str
    pool: asyncpg.Pool
    js: JetStreamContext
    consumer: Any
    registry: EventRegistry
    ledger: Ledger
    transactional: bool
    batch_lock: asyncio.Lock

    @property
    def leading(self) -> bool: ...

    async def try_lock(self, conn: asyncpg.Connection) -> bool: ...

    def forget_handled(self) -> None: ...

log = structlog.get_logger("sdv.rebuild")


class ConsumerBusy(SdvError):
    """Another runner leads this consumer; a rebuild now would race it."""


@dataclass(frozen=True)
class Rebuilt:
    events: int
    applied: int
    checkpoint: int


def shadow_schema(schema: str, name: str) -> str:
    return f"{schema}_rebuild_{name}"[:63]


async def rebuild_from_store(
    runner: ConsumerRunner, store: EventStore, *, service: str | None = None,
    nc: NatsClient | None = None, batch_size: int = 500,
) -> Rebuilt:
    """Rebuild `runner`'s projection from `store` (and, for categories `service` does not own,
    from their owners' history over `nc`), then swap it in."""
    if not runner.transactional:
        raise TypeError(f"{runner.name} is not a projection: there is nothing to rebuild")
    if runner.leading:  # the live runner of this process leads: pause it between batches
        async with runner.batch_lock:
            return await _rebuild(runner, store, service, nc, batch_size)
    async with pooled_session(runner.pool) as lock_conn:
        if not await runner.try_lock(lock_conn):
            raise ConsumerBusy(f"consumer {runner.name!r} of {runner.schema!r} is being fed by "
                               "another runner; rebuild it there, or stop that runner first")
        async with runner.batch_lock:
            return await _rebuild(runner, store, service, nc, batch_size)


async def _rebuild(runner: ConsumerRunner, store: EventStore, service: str | None,
                   nc: NatsClient | None, batch_size: int) -> Rebuilt:
    projection = cast(Projection, runner.consumer)
    live, shadow = runner.schema, shadow_schema(runner.schema, runner.name)
    bound = log.bind(consumer=runner.name, schema=live, shadow=shadow)
    seq, created = await _stream_position(runner)
    built = projection.at(shadow)
    ledger = Ledger(shadow, runner.name)
    async with runner.pool.acquire() as conn, conn.transaction():
        await conn.execute(f"DROP SCHEMA IF EXISTS {shadow} CASCADE; CREATE SCHEMA {shadow}")
        await built.create(conn)
        await ledger.create(conn)
        if isinstance(built, SeedsShadow):
            await built.seed(conn, live)
    bound.info("rebuild_started", checkpoint=seq)
    categories = _categories(projection.filter_subjects)
    own = [c for c in categories if service is None or owner_of(f"{c}-x") in (None, service)]
    others = [c for c in categories if c not in own]
    events = applied = 0
    batch: list[Envelope] = []
    async for event in _feed(store, own, others, nc, runner):
        batch.append(event)
        if len(batch) >= batch_size:
            applied += await _apply(runner.pool, built, ledger, batch)
            events += len(batch)
            batch = []
    applied += await _apply(runner.pool, built, ledger, batch)
    events += len(batch)
    await _swap(runner, projection, live, shadow, seq, created)
    runner.forget_handled()  # the swap replaced the consumer's stream versions
    if isinstance(projection, WithSideEffects):
        await projection.after_rebuild()
    bound.info("rebuild_swapped_in", events=events, applied=applied, checkpoint=seq)
    return Rebuilt(events, applied, seq)


def _categories(subjects: Sequence[str]) -> list[str]:
    found: list[str] = []
    for subject in subjects:
        category = category_of_subject(subject)
        if category is None or not is_versioned(category):
            raise ValueError(f"cannot rebuild from {subject!r}: only services' categories are "
                             "stored (devices' facts live on the devices)")
        if category not in found:
            found.append(category)
    return found


async def _feed(store: EventStore, own: list[str], others: list[str], nc: NatsClient | None,
                runner: ConsumerRunner) -> AsyncIterator[Envelope]:
    if own:
        position = 0
        while True:  # read until nothing new: positions become visible in commit order
            before = position
            async for event in store.read_all(position, 1000):
                position = event.position
                if event.stream_id.split("-", 1)[0] in own:
                    yield event
            if position == before:
                break
    for category in others:
        if nc is None:
            raise ValueError(f"events of {category!r} come from another service: pass nc")
        owner = owner_of(f"{category}-x")
        assert owner is not None
        query = HistoryQuery(category=category, limit=MAX_LIMIT)
        async for event in read_history(nc, owner, query, registry=runner.registry):
            yield event


async def _apply(pool: asyncpg.Pool, built: Projection, ledger: Ledger,
                 events: list[Envelope]) -> int:
    """One transaction per batch: rows and versions of the shadow, together."""
    if not events:
        return 0
    wanted = [e for e in events if any(subject_matches(event_subject(e.stream_id, e.type), p)
                                       for p in built.filter_subjects)]
    async with pool.acquire() as conn, conn.transaction():
        if len(wanted) > 1 and isinstance(built, AppliesBatches):
            await built.apply_batch(conn, wanted)
        else:
            for event in wanted:
                await built.apply(conn, event)
        versions = {e.stream_id: Handled(e.version, e.event_id) for e in events}
        await ledger.record(conn, versions=versions)
    return len(wanted)


async def _stream_position(runner: ConsumerRunner) -> tuple[int, datetime | None]:
    """JetStream's last sequence before anything is read from the store (0 without a stream)."""
    with contextlib.suppress(NotFoundError):
        info = await runner.js.stream_info(runner.stream)
        return int(info.state.last_seq), info.created
    return 0, None


async def _swap(runner: ConsumerRunner, projection: Projection, live: str, shadow: str, seq: int,
                created: datetime | None) -> None:
    async with runner.pool.acquire() as conn, conn.transaction():
        for table in projection.tables:
            await conn.execute(f"DROP TABLE IF EXISTS {live}.{table} CASCADE")
            await conn.execute(f"ALTER TABLE {shadow}.{table} SET SCHEMA {live}")
            # Index names that embed the schema follow it, so `create` finds them next start.
            for index in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 "
                "AND strpos(indexname, $3) > 0", live, table, shadow):
                renamed = index["indexname"].replace(shadow, live)
                await conn.execute(f'ALTER INDEX {live}."{index["indexname"]}" RENAME TO "{renamed}"')
        await conn.execute(
            f"DELETE FROM {live}.consumer_streams WHERE consumer = $1", runner.name)
        await conn.execute(
            f"INSERT INTO {live}.consumer_streams (consumer, stream_id, version, event_id) "
            f"SELECT consumer, stream_id, version, event_id FROM {shadow}.consumer_streams "
            "WHERE consumer = $1", runner.name)
        await runner.ledger.set_position(conn, seq, created)
        if isinstance(projection, WithSideEffects):
            await projection.after_swap(conn)
        await conn.execute(f"DROP SCHEMA {shadow} CASCADE")
