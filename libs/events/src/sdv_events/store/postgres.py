"""PostgreSQL event store (asyncpg): append with optimistic concurrency, reads, idempotency."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from sdv_events.codec import decode_body, decode_metadata, encode, encode_metadata
from sdv_events.envelope import Envelope, Metadata, TraceContext
from sdv_events.errors import (
    ConcurrencyConflict,
    DuplicateCommand,
    EventTooLarge,
    IdempotencyConflict,
)
from sdv_events.idempotency import DEFAULT_KEY_TTL, IdempotencyKey
from sdv_events.ids import split_stream_id, uuid7
from sdv_events.registry import EventRegistry, default_registry
from sdv_events.store.reads import EventFilter, RecordedEvent, page_sql
from sdv_events.store.schema import check_schema_name, check_schema_set_up, ensure_schema

ANY = -1
NO_STREAM = 0
# The largest event (encoded body + metadata) `append` accepts. Well under NATS's default
# 1 MiB max_payload, so the relay can always publish what was stored.
MAX_EVENT_BYTES = 256 * 1024

_COLUMNS = (
    "global_position, stream_id, version, event_id, type, schema_version, data, metadata, occurred_at"
)


class _OutcomeKind(msgspec.Struct):
    """The tag of a recorded command outcome (`accepted` / `rejected`), read without its type."""

    type: str = ""


@dataclasses.dataclass
class ObservedHead:
    """A head position and the appends of the schema that were in flight when it was seen."""

    head: int
    in_flight: list[str]


class AppendResult(msgspec.Struct, frozen=True):
    next_version: int
    positions: list[int]
    events: list[Envelope]


async def _light_reset(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default reset query (one extra round trip on every
    release, doubling a single append's latency). The pool still rolls back open transactions
    and drops listeners; session-level state (advisory locks, LISTEN) is only ever taken
    through `pooled_session`, which clears it itself."""


@asynccontextmanager
async def pooled_session(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for session-level state — advisory locks, LISTEN — cleared on exit
    (or the connection is closed, which releases everything server-side)."""
    async with pool.acquire() as conn:
        try:
            yield conn
        finally:
            try:
                await conn.execute("SELECT pg_advisory_unlock_all(); UNLISTEN *")
            except Exception:
                with contextlib.suppress(asyncpg.InterfaceError):  # already closed and given back
                    conn.terminate()


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventStore:
    """One service's event store: its own PostgreSQL schema in a shared or own database."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        *,
        registry: EventRegistry = default_registry,
        clock: Callable[[], datetime] = utc_now,
        max_event_bytes: int = MAX_EVENT_BYTES,
        idempotency_ttl: timedelta = DEFAULT_KEY_TTL,
    ) -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)
        self.registry = registry
        self.clock = clock
        self.max_event_bytes = max_event_bytes
        self.idempotency_ttl = idempotency_ttl
        # In-process tailers (the relay) wait on these instead of polling; appends from other
        # processes are found by their idle poll. (A pg_notify per append serialised every
        # commit of the cluster on the notify queue and halved concurrent append throughput.)
        self._append_waiters: set[asyncio.Event] = set()
        appends_lock = (
            "locktype = 'advisory' AND classid = hashtext('sdv_append')::oid "
            f"AND objid = hashtext('{self.schema}')::oid AND objsubid = 2"
        )
        # One statement: its snapshot (for max) is taken before pg_locks is read.
        self._observe_sql = (
            f"SELECT (SELECT coalesce(max(global_position), 0) FROM {self.schema}.events) AS head, "
            "(SELECT coalesce(array_agg(virtualtransaction), '{}') FROM pg_locks "
            f"WHERE {appends_lock}) AS in_flight"
        )
        self._still_sql = (
            "SELECT coalesce(array_agg(virtualtransaction), '{}') FROM pg_locks "
            f"WHERE {appends_lock} AND virtualtransaction = ANY($1::text[])"
        )

    def on_append(self, waiter: asyncio.Event) -> Callable[[], None]:
        """Set `waiter` after every append through this store; returns the unsubscribe."""
        self._append_waiters.add(waiter)
        return lambda: self._append_waiters.discard(waiter)

    @classmethod
    async def open(
        cls, dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10,
        setup: bool = True, **kwargs: Any
    ) -> EventStore:
        """A pool on `dsn` and the schema set up (`setup`), or checked to be (`setup=False`,
        for a role that may not run the store's DDL: store/roles.py)."""
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, reset=_light_reset
        )
        try:
            async with pool.acquire() as conn:
                await (ensure_schema if setup else check_schema_set_up)(conn, schema)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, schema, **kwargs)

    async def close(self) -> None:
        await self.pool.close()

    def wrap(
        self, stream_id: str, version: int, body: msgspec.Struct, metadata: Metadata, now: datetime
    ) -> Envelope:
        type_name, schema_version = self.registry.describe(body)
        return Envelope(
            event_id=uuid7(), stream_id=stream_id, version=version, type=type_name,
            schema_version=schema_version, occurred_at=now, data=body,
            correlation_id=metadata.correlation_id, causation_id=metadata.causation_id,
            actor=metadata.actor, trace=metadata.trace,
        )

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[msgspec.Struct],
        *,
        metadata: Metadata = Metadata(),
        key: IdempotencyKey | None = None,
        outcome: bytes | None = None,
    ) -> AppendResult:
        """Append atomically, binding `key` (if any) to `outcome`. Raises `ConcurrencyConflict`
        when the stream is not at `expected_version` (`ANY` skips the check); when `key` is
        already bound, nothing is appended and it raises `DuplicateCommand` (same request) or
        `IdempotencyConflict` (another request)."""
        now = self.clock()
        base = max(expected_version, 0)
        envelopes = [
            self.wrap(stream_id, base + i + 1, body, metadata, now) for i, body in enumerate(events)
        ]
        return await self.append_envelopes(
            stream_id, expected_version, envelopes, key=key, outcome=outcome
        )

    async def append_envelopes(
        self,
        stream_id: str,
        expected_version: int,
        envelopes: list[Envelope],
        *,
        key: IdempotencyKey | None = None,
        outcome: bytes | None = None,
    ) -> AppendResult:
        """`append` for envelopes built by the caller (the command runner names their ids in
        the outcome it records)."""
        split_stream_id(stream_id)
        if key is not None and outcome is None:
            raise ValueError("an idempotency key needs the outcome to record with it")
        bodies = [encode(e.data) for e in envelopes]
        metas = [encode_metadata(e.metadata) for e in envelopes]
        for envelope, body, meta in zip(envelopes, bodies, metas, strict=True):
            if len(body) + len(meta) > self.max_event_bytes:
                raise EventTooLarge(stream_id, envelope.type, len(body) + len(meta),
                                    self.max_event_bytes)
        try:
            row = await self.pool.fetchrow(
                f"SELECT * FROM {self.schema}.append_events"
                "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
                stream_id, expected_version,
                [e.event_id for e in envelopes], [e.type for e in envelopes],
                [e.schema_version for e in envelopes], bodies, metas,
                [e.occurred_at for e in envelopes],
                key.command_id if key else None, outcome, key.command if key else None,
                key.fingerprint if key else None, self.idempotency_ttl if key else None,
            )
        except asyncpg.PostgresError as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            if sqlstate == "SDV01":
                actual = int(getattr(exc, "detail", "-1") or -1)
                raise ConcurrencyConflict(stream_id, expected_version, actual) from None
            if sqlstate == "SDV03" and key is not None:
                first = await self.first_outcome(key)  # IdempotencyConflict for another request
                if first is not None:
                    raise DuplicateCommand(key.command_id, first) from None
                # The binding expired and was pruned since: the next attempt binds the key anew.
                raise ConcurrencyConflict(stream_id, expected_version, -1) from None
            raise
        assert row is not None
        for waiter in self._append_waiters:
            waiter.set()
        next_version = int(row["next_version"])
        if expected_version == ANY and envelopes:
            first_version = next_version - len(envelopes) + 1
            envelopes = [
                msgspec.structs.replace(e, version=first_version + i) for i, e in enumerate(envelopes)
            ]
        positions = list(row["positions"])
        envelopes = [
            msgspec.structs.replace(e, position=p) for e, p in zip(envelopes, positions, strict=True)
        ]
        return AppendResult(next_version, positions, envelopes)

    async def first_outcome(self, key: IdempotencyKey) -> bytes | None:
        """The outcome `key` is bound to (None: unbound or expired, a new key). Raises
        `IdempotencyConflict` when it is bound to another request."""
        row = await self.pool.fetchrow(
            f"SELECT fingerprint, outcome FROM {self.schema}.idempotency_keys "
            "WHERE command = $1 AND command_id = $2 AND expires_at > now()",
            key.command, key.command_id,
        )
        if row is None:
            return await self._legacy_outcome(key.command_id)
        if row["fingerprint"] != key.fingerprint:
            raise IdempotencyConflict(key.command, key.command_id)
        return bytes(row["outcome"])

    async def _legacy_outcome(self, command_id: str) -> bytes | None:
        """An acceptance recorded under the global command ids of the previous release (before
        the upgrade, or by its replicas in a rolling deploy), within the TTL. Such a record has
        no fingerprint; its rejections were never final."""
        value = await self.pool.fetchval(
            f"SELECT outcome FROM {self.schema}.commands "
            "WHERE command_id = $1 AND recorded_at > now() - $2::interval",
            command_id, self.idempotency_ttl,
        )
        if value is None:
            return None
        raw = bytes(value)
        return raw if msgspec.json.decode(raw, type=_OutcomeKind).type == "accepted" else None

    async def prune_idempotency_keys(self, batch: int = 1000) -> int:
        """Delete expired keys (and legacy command ids past the TTL), `batch` rows per
        transaction; returns how many. Rows another pruner holds are skipped, not waited for."""
        removed = 0
        for table, expired in (("idempotency_keys", "expires_at <= now()"),
                               ("commands", "recorded_at <= now() - $2::interval")):
            while True:
                status = await self.pool.execute(
                    f"DELETE FROM {self.schema}.{table} WHERE ctid = ANY(ARRAY("
                    f"SELECT ctid FROM {self.schema}.{table} WHERE {expired} "
                    "LIMIT $1 FOR UPDATE SKIP LOCKED))",
                    batch, *([self.idempotency_ttl] if table == "commands" else []),
                )
                count = int(status.split()[-1])
                removed += count
                if count < batch:
                    break
        return removed

    async def stream_version(self, stream_id: str) -> int:
        value = await self.pool.fetchval(
            f"SELECT coalesce(max(version), 0) FROM {self.schema}.events WHERE stream_id = $1",
            stream_id,
        )
        return int(value)

    def to_envelope(self, row: asyncpg.Record) -> Envelope:
        meta = decode_metadata(bytes(row["metadata"]))
        return Envelope(
            event_id=row["event_id"], stream_id=row["stream_id"], version=row["version"],
            type=row["type"], schema_version=row["schema_version"],
            occurred_at=row["occurred_at"],
            data=decode_body(row["type"], bytes(row["data"]), registry=self.registry),
            correlation_id=meta.correlation_id, causation_id=meta.causation_id,
            actor=meta.actor, trace=meta.trace, position=row["global_position"],
        )

    def _decode_rows(self, rows: list[asyncpg.Record]) -> Iterator[Envelope]:
        """`to_envelope` of each row selected as `_COLUMNS`, lazily and in order. Columns are
        taken by position, and a row whose metadata bytes equal the previous row's (the events
        of one append) reuses that row's decoded (immutable) `Metadata`."""
        registry = self.registry
        last_raw: bytes | None = None
        meta = Metadata()
        for (position, stream_id, version, event_id, type_, schema_version, data, raw_meta,
             occurred_at) in rows:
            if raw_meta != last_raw:
                meta = decode_metadata(bytes(raw_meta))
                last_raw = raw_meta
            yield Envelope(
                event_id=event_id, stream_id=stream_id, version=version, type=type_,
                schema_version=schema_version, occurred_at=occurred_at,
                data=decode_body(type_, bytes(data), registry=registry),
                correlation_id=meta.correlation_id, causation_id=meta.causation_id,
                actor=meta.actor, trace=meta.trace, position=position,
            )

    async def stream_ids(self, category: str) -> list[str]:
        """Every stream of a category (`policy` → `policy-a`, `policy-b`, …), sorted."""
        rows = await self.pool.fetch(
            f"SELECT DISTINCT stream_id FROM {self.schema}.events "
            "WHERE starts_with(stream_id, $1) ORDER BY stream_id", f"{category}-",
        )
        return [r["stream_id"] for r in rows]

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[Envelope]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.events "
            "WHERE stream_id = $1 AND version >= $2 ORDER BY version",
            stream_id, from_version,
        )
        return list(self._decode_rows(rows))

    async def stream_trace(self, stream_id: str) -> TraceContext:
        """The trace the stream's first event was recorded in (empty when none): the one that
        later events of the stream no request caused (timers, devices' reports) continue."""
        return (await self.stream_metadata(stream_id)).trace

    async def stream_metadata(self, stream_id: str) -> Metadata:
        """The metadata of the stream's first event (empty when none): its correlation id and
        trace are what later events no request caused (timers, devices' reports) carry on."""
        raw = await self.pool.fetchval(
            f"SELECT metadata FROM {self.schema}.events WHERE stream_id = $1 AND version = 1", stream_id)
        return Metadata() if raw is None else decode_metadata(bytes(raw))

    async def read_all(
        self,
        after: int = 0,
        batch_size: int = 500,
        *,
        to: int | None = None,
        category: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        from_position: int | None = None,
    ) -> AsyncIterator[Envelope]:
        """Every event after position `after` (up to `to`, inclusive), in commit order, fetched
        `batch_size` at a time; only `category`'s streams, and only those recorded in
        [`since`, `until`), when given. `from_position` is the old name of `after`.

        Safe to tail: it reads no further than `safe_head()` at the call, below which no event
        can still appear, so a reader that saw position p will never later find a lower one.
        Keep the last position read and call again with `after=` it: nothing is skipped,
        nothing read twice.
        """
        position = after if from_position is None else from_position
        safe = await self.safe_head()
        to = safe if to is None else min(to, safe)
        where = EventFilter(to=to, category=category, since=since, until=until)
        params: list[Any] = [position, batch_size]
        sql = (f"SELECT {_COLUMNS} FROM {self.schema}.events WHERE global_position > $1"
               f"{where.conditions(params)} ORDER BY global_position LIMIT $2")
        while True:
            params[0] = position
            rows = await self.pool.fetch(sql, *params)
            for envelope in self._decode_rows(rows):
                yield envelope
            if len(rows) < batch_size:
                return
            position = rows[-1]["global_position"]

    async def read_category(
        self, category: str, after: int = 0, batch_size: int = 500
    ) -> AsyncIterator[Envelope]:
        """Every event of `category`'s streams (`policy` → `policy-a`, …) after `after`, in
        commit order (`read_all(category=)`)."""
        async for envelope in self.read_all(after, batch_size, category=category):
            yield envelope

    async def safe_head(
        self, conn: asyncpg.Connection | None = None, *, max_wait_s: float | None = None
    ) -> int:
        """The highest position below which nothing more will ever appear: every event at or
        below it that will ever be visible is visible now. Tailers read up to it, never past.

        Positions are drawn when a row is inserted, not when its transaction commits, so the
        highest visible position may sit above a lower one whose transaction is still open.
        Every append holds a shared per-schema lock from before it draws a position until its
        commit is visible, so the appends in flight are listed in `pg_locks`. The head seen in
        one statement is safe once every append that was in flight at that statement has
        ended; appends that start later draw higher positions. Only this schema's appends
        count: a transaction elsewhere in the cluster holds nothing back (unlike
        `pg_snapshot_xmin`, which is cluster-wide). An append left open holds tailers back
        while it stays open — never skipped. With `max_wait_s`, raises `TimeoutError` when
        those appends are still open after that long."""
        if conn is None:
            async with self.pool.acquire() as own:
                return await self.safe_head(own, max_wait_s=max_wait_s)
        observed = await self.observe_head(conn)
        await self.wait_appends(conn, observed, max_wait_s=max_wait_s)
        return observed.head

    async def observe_head(self, conn: asyncpg.Connection) -> ObservedHead:
        """The highest visible position and the appends in flight when it was seen (one
        statement: its snapshot is taken before `pg_locks` is read). `head` is safe once
        `wait_appends` returns for it."""
        row = await conn.fetchrow(self._observe_sql)
        assert row is not None
        return ObservedHead(int(row["head"]), list(row["in_flight"]))

    async def wait_appends(
        self, conn: asyncpg.Connection, observed: ObservedHead, *, max_wait_s: float | None = None
    ) -> None:
        """Until every append in `observed.in_flight` has ended (dropping the ended ones from
        it, so a caller that timed out can go on waiting on the same set — a fresh observation
        could always find new appends behind a busy stream). `TimeoutError` after
        `max_wait_s`."""
        delay, waited = 0.0005, 0.0
        while observed.in_flight:
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)
            observed.in_flight = list(await conn.fetchval(self._still_sql, observed.in_flight))
            if observed.in_flight and max_wait_s is not None and waited >= max_wait_s:
                raise TimeoutError(
                    f"{len(observed.in_flight)} append(s) of schema {self.schema} still open "
                    f"after {waited:.1f}s (they may commit positions below {observed.head})")

    async def head(self) -> int:
        """The highest position written (0 for an empty store). Positions are not dense: a
        rolled-back append leaves a gap."""
        value = await self.pool.fetchval(
            f"SELECT coalesce(max(global_position), 0) FROM {self.schema}.events")
        return int(value)

    async def read_page(
        self, after: int, where: EventFilter, *, limit: int, max_bytes: int, overhead: int = 0
    ) -> tuple[list[RecordedEvent], bool]:
        """Events as recorded after `after` that match `where`, in commit order: at most
        `limit`, and no more than fit in `max_bytes` (each counted as body + metadata + stream
        id + type + `overhead`) — but always the first one. Returns them and whether more match.
        """
        # No further than the safe head, so that paging on with `after=` never skips an event
        # still being committed below a page's last position.
        safe = await self.safe_head(max_wait_s=5.0)
        where = dataclasses.replace(where, to=safe if where.to is None else min(where.to, safe))
        sql, params = page_sql(self.schema, where, after, limit, max_bytes, overhead)
        rows = await self.pool.fetch(sql, *params)
        records = [
            RecordedEvent(
                position=r[0], stream_id=r[1], version=r[2], event_id=r[3], type=r[4],
                schema_version=r[5], data=bytes(r[6]), metadata=bytes(r[7]), occurred_at=r[8],
                recorded_at=r[9],
            )
            for r in rows
        ]
        return records, bool(rows) and rows[0]["fetched"] > len(rows)
