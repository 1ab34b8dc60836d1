"""A consumer's bookkeeping in its service's PostgreSQL schema, written in the same transaction
as a projection's rows: the last version handled per stream (with that event's id), the facts
handled (devices' events, by stream and event id), and the position on JetStream to resume from.

The JetStream position is only where to resume, never what decides a duplicate: it is kept with
the stream's creation time, so a stream deleted and recreated (sequences restart at 1) is
noticed and read from its start instead of from an old, meaningless sequence.

A fact is known by `(stream_id, event_id)`, never by its id alone: fact ids are predictable, and
a device may publish any id on its own subject — keyed by id alone, it could make another
device's real fact a "duplicate". (`consumer_events`, keyed by id alone before, is no longer
read; it is left for builds that still use it and can be dropped once none runs.)

The last version's event id is what tells a duplicate from a divergent history: the same
(stream, version) with another id (an owner restored from an older backup that wrote on).

Setup runs at every start, on live tables: it looks in the catalog first and runs DDL only for
what is missing (a no-op `CREATE INDEX IF NOT EXISTS` or `ALTER TABLE` still takes its lock and
would wait for, or deadlock with, the live consumers).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, TypeAlias

import asyncpg

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"
# A device's fact: (stream id, event id).
FactKey: TypeAlias = tuple[str, uuid.UUID]

_TABLES = {
    "consumer_streams": """
        CREATE TABLE {s}.consumer_streams (
            consumer text NOT NULL, stream_id text NOT NULL, version integer NOT NULL,
            event_id uuid, PRIMARY KEY (consumer, stream_id))""",
    "consumer_facts": """
        CREATE TABLE {s}.consumer_facts (
            consumer text NOT NULL, stream_id text NOT NULL, event_id uuid NOT NULL,
            seen_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, stream_id, event_id))""",
    "consumer_facts_seen_at": """
        CREATE INDEX consumer_facts_seen_at ON {s}.consumer_facts (consumer, seen_at)""",
    "consumer_positions": """
        CREATE TABLE {s}.consumer_positions (
            consumer text PRIMARY KEY, seq bigint NOT NULL DEFAULT 0,
            stream_created timestamptz, since timestamptz NOT NULL DEFAULT now(),
            parked bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now())""",
}
# Columns added after a table first shipped: (table, column, definition).
_COLUMNS = [("consumer_streams", "event_id", "uuid")]


class Handled(NamedTuple):
    """The last event handled on a stream (its id is None when recorded by an older build)."""

    version: int
    event_id: uuid.UUID | None


class KnownVersions:
    """The last version handled per stream as a leading runner committed or read it, so that
    it does not ask the ledger again each batch. Kept as plain integers, which the garbage
    collector does not track: a catch-up remembers tens of thousands of streams, and a heap of
    tracked objects that size makes every full collection of the service's process longer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: dict[str, tuple[int, int | None]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def lookup(self, streams: Iterable[str]) -> dict[str, Handled]:
        """What is known of `streams` (a new dict: the caller may edit it)."""
        known, found = self._known, {}
        for stream in streams:
            if (entry := known.get(stream)) is not None:
                version, event_id = entry
                found[stream] = Handled(version, None if event_id is None else uuid.UUID(int=event_id))
        return found

    def remember(self, handled: Mapping[str, Handled]) -> None:
        """Versions committed or read from the ledger (a lower one than known is ignored)."""
        known = self._known
        if len(known) + len(handled) > self.limit:
            known.clear()  # starting over costs a ledger read per stream, once
        for stream, (version, event_id) in handled.items():
            entry = known.get(stream)
            if entry is None or version >= entry[0]:
                known[stream] = (version, None if event_id is None else event_id.int)

    def forget(self) -> None:
        self._known.clear()


@dataclass(frozen=True)
class Position:
    seq: int
    stream_created: datetime | None
    # When the consumer was created: a `start="new"` consumer heals an unseen stream only from
    # events that happened since.
    since: datetime
    parked: int


class Ledger:
    def __init__(self, schema: str, consumer: str) -> None:
        self.schema = schema
        self.consumer = consumer

    async def create(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        """Idempotent and cheap on an existing schema (catalog reads, no DDL, no lock);
        concurrent callers creating what is missing serialise on an advisory lock."""
        if isinstance(pool, asyncpg.Pool):
            async with pool.acquire() as conn:
                await self._create(conn)
        else:
            await self._create(pool)

    async def _missing(self, conn: asyncpg.Connection) -> tuple[list[str], list[tuple[str, str, str]]]:
        present = {r["relname"] for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = ANY($2::text[])", self.schema, list(_TABLES))}
        columns = {(r["table_name"], r["column_name"]) for r in await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = ANY($2::text[])",
            self.schema, [t for t, _, _ in _COLUMNS])}
        tables = [name for name in _TABLES if name not in present]
        added = [c for c in _COLUMNS if c[0] in present and (c[0], c[1]) not in columns]
        return tables, added

    async def _create(self, conn: asyncpg.Connection) -> None:
        tables, added = await self._missing(conn)
        if not tables and not added:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sdv_schema_setup'))")
            # A one-time change to a live table waits for its lock a bounded time, not forever.
            await conn.execute("SET LOCAL lock_timeout = '10s'")
            tables, added = await self._missing(conn)  # another starter may have done it
            for name in tables:
                await conn.execute(_TABLES[name].format(s=self.schema))
            for table, column, definition in added:
                await conn.execute(
                    f"ALTER TABLE {self.schema}.{table} ADD COLUMN {column} {definition}")

    async def position(self, conn: Conn) -> Position | None:
        row = await conn.fetchrow(
            f"SELECT seq, stream_created, since, parked FROM {self.schema}.consumer_positions "
            "WHERE consumer = $1", self.consumer)
        if row is None:
            return None
        return Position(int(row["seq"]), row["stream_created"], row["since"], int(row["parked"]))

    async def set_position(self, conn: Conn, seq: int, stream_created: datetime | None) -> None:
        await conn.execute(
            f"INSERT INTO {self.schema}.consumer_positions (consumer, seq, stream_created) "
            "VALUES ($1, $2, $3) ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq, "
            "stream_created = excluded.stream_created, updated_at = now()",
            self.consumer, seq, stream_created)

    async def versions(self, conn: Conn, stream_ids: Iterable[str]) -> dict[str, Handled]:
        # One index lookup per stream, whatever the statistics say: `stream_id = ANY($2)` was
        # planned as a scan of all the consumer's rows while the table was young (its
        # statistics said a few rows), 10-100 ms a batch once it held 10,000 streams.
        t = f"{self.schema}.consumer_streams"
        rows = await conn.fetch(
            "SELECT * FROM (SELECT k.stream_id, "
            f"(SELECT version FROM {t} c WHERE c.consumer = $1 AND c.stream_id = k.stream_id), "
            f"(SELECT event_id FROM {t} c WHERE c.consumer = $1 AND c.stream_id = k.stream_id) "
            "FROM unnest($2::text[]) AS k(stream_id)) AS h(stream_id, version, event_id) "
            "WHERE version IS NOT NULL", self.consumer, list(stream_ids))
        return {r["stream_id"]: Handled(int(r["version"]), r["event_id"]) for r in rows}

    async def seen(self, conn: Conn, facts: Iterable[FactKey]) -> set[FactKey]:
        """Which of these facts were handled: by stream and id together."""
        keys = list(facts)
        rows = await conn.fetch(
            f"SELECT f.stream_id, f.event_id FROM {self.schema}.consumer_facts f "
            "JOIN unnest($2::text[], $3::uuid[]) AS k(stream_id, event_id) "
            "USING (stream_id, event_id) WHERE f.consumer = $1",
            self.consumer, [s for s, _ in keys], [e for _, e in keys])
        return {(r["stream_id"], r["event_id"]) for r in rows}

    async def record(
        self,
        conn: asyncpg.Connection,
        *,
        versions: Mapping[str, Handled],
        facts: Iterable[FactKey] = (),
        seq: int | None = None,
        parked: int = 0,
    ) -> None:
        """Inside the caller's transaction: what was handled, and where to resume."""
        if versions:
            await conn.execute(
                f"INSERT INTO {self.schema}.consumer_streams AS c "
                "(consumer, stream_id, version, event_id) "
                "SELECT $1, s, v, e FROM unnest($2::text[], $3::int[], $4::uuid[]) AS u(s, v, e) "
                "ON CONFLICT (consumer, stream_id) DO UPDATE "
                "SET version = greatest(c.version, excluded.version), "
                "event_id = CASE WHEN excluded.version >= c.version THEN excluded.event_id "
                "ELSE c.event_id END",
                self.consumer, list(versions), [h.version for h in versions.values()],
                [h.event_id for h in versions.values()])
        keys = list(facts)
        if keys:
            await conn.execute(
                f"INSERT INTO {self.schema}.consumer_facts (consumer, stream_id, event_id) "
                "SELECT $1, s, e FROM unnest($2::text[], $3::uuid[]) AS u(s, e) "
                "ON CONFLICT DO NOTHING", self.consumer, [s for s, _ in keys], [e for _, e in keys])
        if seq is not None or parked:
            await conn.execute(
                f"INSERT INTO {self.schema}.consumer_positions (consumer, seq, parked) "
                "VALUES ($1, coalesce($2, 0), $3) ON CONFLICT (consumer) DO UPDATE SET "
                "seq = greatest(consumer_positions.seq, coalesce($2, consumer_positions.seq)), "
                "parked = consumer_positions.parked + $3, updated_at = now()",
                self.consumer, seq, parked)

    async def prune_facts(self, conn: Conn, older_than_s: float, limit: int) -> int:
        """Forget at most `limit` facts handled longer ago than `older_than_s` (kept long past
        any redelivery: JetStream redelivers within minutes). Returns how many went."""
        status = await conn.execute(
            f"DELETE FROM {self.schema}.consumer_facts WHERE (consumer, stream_id, event_id) IN ("
            f"SELECT consumer, stream_id, event_id FROM {self.schema}.consumer_facts "
            "WHERE consumer = $1 AND seen_at < now() - make_interval(secs => $2) LIMIT $3)",
            self.consumer, older_than_s, limit)
        return int(status.split()[-1])
