"""The rollout catalog's table (`<schema>.rollouts`, declared in sql/001_rollouts.sql): every
write the projection makes (projections.RolloutCatalog) and every query of it (the list, the
ticker's active rollouts, a policy's fleet version), in one place. Writes take the runner's
connection (rows and checkpoint commit together); queries take the pool."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from sdv_events.store.schema import ensure_read_models

# The statuses a rollout ends in.
TERMINAL = ("completed", "aborted", "cancelled", "rolled_back")


class RolloutsView:
    tables = ("rollouts",)

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = f"{schema}.rollouts"

    async def create(self, conn: asyncpg.Connection) -> None:
        await ensure_read_models(conn, "sdv_orchestrator", self.schema)

    # --- writes (the projection's) -------------------------------------------------------------

    async def created(self, conn: asyncpg.Connection, rollout_id: str, app: str, version: str,
                      at: datetime, schedule: bytes | None) -> None:
        await conn.execute(
            f"INSERT INTO {self.table} (rollout_id, app, version, status, created_at, updated_at, "
            "schedule) VALUES ($1, $2, $3, 'created', $4, $4, $5) ON CONFLICT DO NOTHING",
            rollout_id, app, version, at, schedule)

    async def planned(self, conn: asyncpg.Connection, rollout_id: str, devices: int,
                      at: datetime) -> None:
        await conn.execute(
            f"UPDATE {self.table} SET status = 'running', devices = $2, updated_at = $3 "
            "WHERE rollout_id = $1", rollout_id, devices, at)

    async def succeeded(self, conn: asyncpg.Connection, rollout_id: str, at: datetime) -> None:
        await conn.execute(f"UPDATE {self.table} SET succeeded = succeeded + 1, updated_at = $2 "
                           "WHERE rollout_id = $1", rollout_id, at)

    async def failed(self, conn: asyncpg.Connection, rollout_id: str, at: datetime) -> None:
        await conn.execute(f"UPDATE {self.table} SET failed = failed + 1, updated_at = $2 "
                           "WHERE rollout_id = $1", rollout_id, at)

    async def status(self, conn: asyncpg.Connection, rollout_id: str, status: str,
                     at: datetime) -> None:
        await conn.execute(
            f"UPDATE {self.table} SET status = $2, updated_at = $3 WHERE rollout_id = $1",
            rollout_id, status, at)

    async def rollback_started(self, conn: asyncpg.Connection, rollout_id: str,
                               at: datetime) -> None:
        await self.status(conn, rollout_id, "rolled_back", at)
        await conn.execute(f"UPDATE {self.table} SET rollback_open = true WHERE rollout_id = $1",
                           rollout_id)

    async def rollback_completed(self, conn: asyncpg.Connection, rollout_id: str,
                                 at: datetime) -> None:
        await conn.execute(f"UPDATE {self.table} SET rollback_open = false, updated_at = $2 "
                           "WHERE rollout_id = $1", rollout_id, at)

    # --- queries -------------------------------------------------------------------------------

    async def active(self, pool: asyncpg.Pool) -> list[str]:
        """Rollouts the ticker looks after: running or paused, or following a rollback."""
        rows = await pool.fetch(f"SELECT rollout_id FROM {self.table} "
                                "WHERE status IN ('running', 'paused') OR rollback_open")
        return [r["rollout_id"] for r in rows]

    async def list(self, pool: asyncpg.Pool, app: str | None, status: str | None,
                   limit: int) -> list[asyncpg.Record]:
        """Rows, newest first, of `app` and `status` when given."""
        return list(await pool.fetch(
            f"SELECT * FROM {self.table} WHERE ($1::text IS NULL OR app = $1) "
            "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC LIMIT $3",
            app, status, limit))

    async def last_completed(self, pool: asyncpg.Pool, app: str) -> str | None:
        """The app's most recently completed rollout."""
        rid: str | None = await pool.fetchval(
            f"SELECT rollout_id FROM {self.table} WHERE app = $1 AND status = 'completed' "
            "ORDER BY updated_at DESC LIMIT 1", app)
        return rid
