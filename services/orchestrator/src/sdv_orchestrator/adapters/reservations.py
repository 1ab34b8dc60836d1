"""Device reservations: the write side's guard that one rollout at a time holds each (device,
app). Not a read model: the start of a rollout reserves its eligible devices (application.py,
under an advisory lock per app), a start that is not stored releases them, and a rollout's
terminal event releases them once appended. No projection writes it and no rebuild touches
it; the orchestrator creates it at start, beside its event store."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


class Reservations:
    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = f"{schema}.reservations"

    async def create(self, conn: Db) -> None:
        """Idempotent (a table an older build made with the catalog's DDL is the same table)."""
        await conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {self.table} (
                device_id text NOT NULL, app text NOT NULL, rollout_id text NOT NULL,
                PRIMARY KEY (device_id, app));
            CREATE INDEX IF NOT EXISTS reservations_rollout ON {self.table} (rollout_id);""")

    async def lock_app(self, conn: asyncpg.Connection, app: str) -> None:
        """One start at a time per app across replicas (until the transaction ends), so two
        overlapping starts cannot both pass."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sdv_reserve'), hashtext($1))", app)

    async def held_by_others(self, conn: Db, rollout_id: str, app: str,
                             devices: list[str]) -> list[tuple[str, str]]:
        """(device, rollout) for the devices another rollout holds for `app`."""
        rows = await conn.fetch(
            f"SELECT device_id, rollout_id FROM {self.table} "
            "WHERE app = $1 AND device_id = ANY($2) AND rollout_id <> $3",
            app, devices, rollout_id)
        return [(r["device_id"], r["rollout_id"]) for r in rows]

    async def reserve(self, conn: Db, rollout_id: str, app: str, devices: list[str]) -> None:
        await conn.executemany(
            f"INSERT INTO {self.table} VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [(d, app, rollout_id) for d in devices])

    async def release(self, conn: Db, rollout_ids: list[str]) -> None:
        """Every reservation of these rollouts (ended, or never stored)."""
        await conn.execute(f"DELETE FROM {self.table} WHERE rollout_id = ANY($1::text[])",
                           rollout_ids)
