"""A consumer's bookkeeping in its service's PostgreSQL schema, written in the same transaction
as a projection's rows: the last version handled per stream, the event ids handled (devices'
facts), and the position on JetStream to resume from.

The JetStream position is only where to resume, never what decides a duplicate: it is kept with
the stream's creation time, so a stream deleted and recreated (sequences restart at 1) is
noticed and read from its start instead of from an old, meaningless sequence.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"


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
        """Idempotent; concurrent callers (several consumers of one service starting together)
        serialise, as CREATE TABLE IF NOT EXISTS alone races."""
        if isinstance(pool, asyncpg.Pool):
            async with pool.acquire() as conn:
                await self._create(conn)
        else:
            await self._create(pool)

    async def _create(self, conn: asyncpg.Connection) -> None:
        s = self.schema
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sdv_schema_setup'))")
            await conn.execute(f"""
                CREATE TABLE IF NOT EXISTS {s}.consumer_streams (
                    consumer text NOT NULL, stream_id text NOT NULL, version integer NOT NULL,
                    PRIMARY KEY (consumer, stream_id));
                CREATE TABLE IF NOT EXISTS {s}.consumer_events (
                    consumer text NOT NULL, event_id uuid NOT NULL,
                    seen_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, event_id));
                CREATE TABLE IF NOT EXISTS {s}.consumer_positions (
                    consumer text PRIMARY KEY, seq bigint NOT NULL DEFAULT 0,
                    stream_created timestamptz, since timestamptz NOT NULL DEFAULT now(),
                    parked bigint NOT NULL DEFAULT 0,
                    updated_at timestamptz NOT NULL DEFAULT now());
            """)

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

    async def versions(self, conn: Conn, stream_ids: Iterable[str]) -> dict[str, int]:
        rows = await conn.fetch(
            f"SELECT stream_id, version FROM {self.schema}.consumer_streams "
            "WHERE consumer = $1 AND stream_id = ANY($2::text[])", self.consumer, list(stream_ids))
        return {r["stream_id"]: int(r["version"]) for r in rows}

    async def seen(self, conn: Conn, event_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        rows = await conn.fetch(
            f"SELECT event_id FROM {self.schema}.consumer_events "
            "WHERE consumer = $1 AND event_id = ANY($2::uuid[])", self.consumer, list(event_ids))
        return {r["event_id"] for r in rows}

    async def record(
        self,
        conn: asyncpg.Connection,
        *,
        versions: Mapping[str, int],
        event_ids: Iterable[uuid.UUID] = (),
        seq: int | None = None,
        parked: int = 0,
    ) -> None:
        """Inside the caller's transaction: what was handled, and where to resume."""
        if versions:
            await conn.execute(
                f"INSERT INTO {self.schema}.consumer_streams AS c (consumer, stream_id, version) "
                "SELECT $1, s, v FROM unnest($2::text[], $3::int[]) AS u(s, v) "
                "ON CONFLICT (consumer, stream_id) DO UPDATE "
                "SET version = greatest(c.version, excluded.version)",
                self.consumer, list(versions), list(versions.values()))
        ids = list(event_ids)
        if ids:
            await conn.execute(
                f"INSERT INTO {self.schema}.consumer_events (consumer, event_id) "
                "SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING", self.consumer, ids)
        if seq is not None or parked:
            await conn.execute(
                f"INSERT INTO {self.schema}.consumer_positions (consumer, seq, parked) "
                "VALUES ($1, coalesce($2, 0), $3) ON CONFLICT (consumer) DO UPDATE SET "
                "seq = greatest(consumer_positions.seq, coalesce($2, consumer_positions.seq)), "
                "parked = consumer_positions.parked + $3, updated_at = now()",
                self.consumer, seq, parked)

    async def prune_events(self, conn: Conn, older_than_s: float) -> None:
        """Event ids are kept long past any redelivery (JetStream redelivers within minutes)."""
        await conn.execute(
            f"DELETE FROM {self.schema}.consumer_events WHERE consumer = $1 "
            "AND seen_at < now() - make_interval(secs => $2)", self.consumer, older_than_s)
