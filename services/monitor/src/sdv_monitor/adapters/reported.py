"""Agents' reported state (KV `sdv_reported`, one key per device, written by the devices) →
`reported_devices` / `reported_apps`: restarts, pid, agent version, what the agent says runs.

Not events — the latest document per device — so not part of the rebuildable read models: a
watch replays every key's current value at start, which rebuilds these tables by itself. What a
device writes is untrusted: a document that does not decode, names another device or is too
big is logged and skipped."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from sdv_events.provisioning import REPORTED_BUCKET
from sdv_events.schemas.deployment import ReportedState
from sdv_monitor.domain.app_state import text

log = structlog.get_logger("sdv.monitor.reported")
MAX_DOCUMENT_BYTES = 256 * 1024
_decode = msgspec.json.Decoder(ReportedState).decode


class ReportedStates:
    def __init__(self, pool: asyncpg.Pool, schema: str, js: JetStreamContext) -> None:
        self.pool = pool
        self.s = schema
        self.js = js
        self.applied = 0
        self.refused = 0

    async def create(self, conn: asyncpg.Connection) -> None:
        s = self.s
        await conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {s}.reported_devices (
                device_id text PRIMARY KEY, agent_version text NOT NULL, desired_revision bigint NOT NULL,
                updated_at timestamptz);
            CREATE TABLE IF NOT EXISTS {s}.reported_apps (
                device_id text NOT NULL, app text NOT NULL, version text NOT NULL, digest text NOT NULL,
                state text NOT NULL, healthy boolean NOT NULL, restarts integer NOT NULL,
                last_error text, pid integer, started_at timestamptz, PRIMARY KEY (device_id, app));""")

    async def run(self, stop: asyncio.Event) -> None:
        kv: KeyValue = await self.js.key_value(REPORTED_BUCKET)
        watcher = await kv.watchall()
        try:
            while not stop.is_set():
                try:
                    entry = await watcher.updates(timeout=1.0)  # type: ignore[no-untyped-call]
                except TimeoutError:
                    continue
                if entry is None:  # end of the initial values
                    continue
                await self.apply(entry.key, entry.value, deleted=entry.operation is not None
                                 and str(entry.operation) in ("DEL", "PURGE"))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def apply(self, key: str, value: bytes | None, *, deleted: bool = False) -> None:
        if deleted or not value:
            await self._forget(key)
            return
        try:
            if len(value) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{len(value)} bytes")
            state = _decode(value)
            if state.device_id != key:
                raise ValueError(f"document names device {state.device_id[:100]!r}")
        except (msgspec.DecodeError, ValueError) as exc:
            self.refused += 1
            log.warning("reported_state_refused", device_id=key, error=str(exc)[:300])
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {self.s}.reported_devices VALUES ($1,$2,$3,$4) ON CONFLICT (device_id) "
                "DO UPDATE SET agent_version = $2, desired_revision = $3, updated_at = $4",
                key, text(state.agent_version, 64), state.desired_revision, state.updated_at)
            await conn.execute(f"DELETE FROM {self.s}.reported_apps WHERE device_id = $1", key)
            await conn.executemany(
                f"INSERT INTO {self.s}.reported_apps VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                [(key, text(a.name, 128), text(a.version, 64), text(a.digest, 128), a.state, a.healthy,
                  a.restarts, a.last_error and text(a.last_error, 1000), a.pid, a.started_at)
                 for a in list(state.apps.values())[:200]])
        self.applied += 1

    async def _forget(self, key: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {self.s}.reported_devices WHERE device_id = $1", key)
            await conn.execute(f"DELETE FROM {self.s}.reported_apps WHERE device_id = $1", key)
