"""PostgreSQL event store (asyncpg): append with optimistic concurrency, reads, idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from sdv_events.codec import decode_body, decode_metadata, encode, encode_metadata
from sdv_events.envelope import Envelope, Metadata
from sdv_events.errors import ConcurrencyConflict, DuplicateCommand, EventTooLarge
from sdv_events.ids import split_stream_id, uuid7
from sdv_events.registry import EventRegistry, default_registry
from sdv_events.store.schema import check_schema_name, ensure_schema

ANY = -1
NO_STREAM = 0
# The largest event (encoded body + metadata) `append` accepts. Well under NATS's default
# 1 MiB max_payload, so the relay can always publish what was stored.
MAX_EVENT_BYTES = 256 * 1024

_COLUMNS = (
    "global_position, stream_id, version, event_id, type, schema_version, data, metadata, occurred_at"
)


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
    ) -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)
        self.registry = registry
        self.clock = clock
        self.max_event_bytes = max_event_bytes
        # In-process tailers (the relay) wait on these instead of polling; appends from other
        # processes are found by their idle poll. (A pg_notify per append serialised every
        # commit of the cluster on the notify queue and halved concurrent append throughput.)
        self._append_waiters: set[asyncio.Event] = set()

    def on_append(self, waiter: asyncio.Event) -> Callable[[], None]:
        """Set `waiter` after every append through this store; returns the unsubscribe."""
        self._append_waiters.add(waiter)
        return lambda: self._append_waiters.discard(waiter)

    @classmethod
    async def open(
        cls, dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
    ) -> EventStore:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, reset=_light_reset
        )
        async with pool.acquire() as conn:
            await ensure_schema(conn, schema)
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
        command_id: str | None = None,
        outcome: bytes | None = None,
    ) -> AppendResult:
        """Append atomically. Raises `ConcurrencyConflict` when the stream is not at
        `expected_version` (`ANY` skips the check) and `DuplicateCommand` when `command_id`
        was already recorded (then nothing is appended)."""
        now = self.clock()
        base = max(expected_version, 0)
        envelopes = [
            self.wrap(stream_id, base + i + 1, body, metadata, now) for i, body in enumerate(events)
        ]
        return await self.append_envelopes(
            stream_id, expected_version, envelopes, command_id=command_id, outcome=outcome
        )

    async def append_envelopes(
        self,
        stream_id: str,
        expected_version: int,
        envelopes: list[Envelope],
        *,
        command_id: str | None = None,
        outcome: bytes | None = None,
    ) -> AppendResult:
        """`append` for envelopes built by the caller (the command runner names their ids in
        the outcome it records)."""
        split_stream_id(stream_id)
        if command_id is not None and outcome is None:
            raise ValueError("a command_id needs the outcome to record with it")
        bodies = [encode(e.data) for e in envelopes]
        metas = [encode_metadata(e.metadata) for e in envelopes]
        for envelope, body, meta in zip(envelopes, bodies, metas, strict=True):
            if len(body) + len(meta) > self.max_event_bytes:
                raise EventTooLarge(stream_id, envelope.type, len(body) + len(meta),
                                    self.max_event_bytes)
        try:
            row = await self.pool.fetchrow(
                f"SELECT * FROM {self.schema}.append_events($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                stream_id, expected_version,
                [e.event_id for e in envelopes], [e.type for e in envelopes],
                [e.schema_version for e in envelopes], bodies, metas,
                [e.occurred_at for e in envelopes], command_id, outcome,
            )
        except asyncpg.UniqueViolationError as exc:
            if command_id is not None and exc.constraint_name == "commands_pkey":
                first = await self.command_outcome(command_id)
                if first is not None:
                    raise DuplicateCommand(command_id, first) from None
            raise
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) == "SDV01":
                actual = int(getattr(exc, "detail", "-1") or -1)
                raise ConcurrencyConflict(stream_id, expected_version, actual) from None
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

    async def command_outcome(self, command_id: str) -> bytes | None:
        value = await self.pool.fetchval(
            f"SELECT outcome FROM {self.schema}.commands WHERE command_id = $1", command_id
        )
        return bytes(value) if value is not None else None

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
            f"SELECT DISTINCT stream_id FROM {self.schema}.events WHERE stream_id LIKE $1 "
            "ORDER BY stream_id", f"{category}-%",
        )
        return [r["stream_id"] for r in rows]

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[Envelope]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.events "
            "WHERE stream_id = $1 AND version >= $2 ORDER BY version",
            stream_id, from_version,
        )
        return list(self._decode_rows(rows))

    async def read_all(
        self,
        from_position: int = 0,
        batch_size: int = 500,
        *,
        until: datetime | None = None,
        since: datetime | None = None,
    ) -> AsyncIterator[Envelope]:
        """Every event after `from_position`, in position order, fetched `batch_size` at a time.

        A point-in-time scan (audit, rebuilds). A transaction still in flight may later commit
        a lower position than the last one seen here; tailers use the relay's commit-safe cursor.
        """
        position = from_position
        while True:
            rows = await self.pool.fetch(
                f"SELECT {_COLUMNS} FROM {self.schema}.events WHERE global_position > $1 "
                "AND ($3::timestamptz IS NULL OR recorded_at >= $3) "
                "AND ($4::timestamptz IS NULL OR recorded_at < $4) "
                "ORDER BY global_position LIMIT $2",
                position, batch_size, since, until,
            )
            for envelope in self._decode_rows(rows):
                yield envelope
            if len(rows) < batch_size:
                return
            position = rows[-1]["global_position"]
