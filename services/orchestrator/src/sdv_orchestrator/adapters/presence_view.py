"""Devices' presence (`<schema>.device_presence`, declared in sql/002_presence.sql): the write
the projection makes (projections.Presence) and the ticker's query, in one place."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from sdv_events.store.schema import ensure_read_models


class PresenceView:
    tables = ("device_presence",)

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = f"{schema}.device_presence"

    async def create(self, conn: asyncpg.Connection) -> None:
        await ensure_read_models(conn, "sdv_orchestrator", self.schema)

    async def seen(self, conn: asyncpg.Connection, device_id: str, online: bool,
                   at: datetime) -> None:
        await conn.execute(
            f"INSERT INTO {self.table} VALUES ($1, $2, $3) ON CONFLICT (device_id) "
            "DO UPDATE SET online = excluded.online, at = excluded.at", device_id, online, at)

    async def of(self, pool: asyncpg.Pool, device_ids: list[str]) -> dict[str, bool]:
        """Online (True) or not, for the devices the registry has said something about."""
        rows = await pool.fetch(f"SELECT device_id, online FROM {self.table} "
                                "WHERE device_id = ANY($1::text[])", device_ids)
        return {r["device_id"]: r["online"] for r in rows}
