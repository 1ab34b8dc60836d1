"""Read models of the orchestrator, fed from its own rollout events (`sdv.evt.rollout.>`):

- `RolloutCatalog`: one summary row per rollout (list, active rollouts for the ticker), and the
  release of device reservations when a rollout ends;
- `DesiredStates`: per device the app assignments the rollouts made, and the desired-state
  document in KV `sdv_desired` — a projection of events, so it can be rebuilt. The KV write
  happens inside the read-model transaction, before its commit: a crash after the write
  re-applies the same event after restart, producing the same document (agents are
  level-triggered), and a crash before it loses nothing. It keeps each rollout's previous
  packages (from its plan chunks) so that a rollback, which names no device, finds them in its
  own tables: the devices the rollout still owns and the package each ran before.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec
from nats.js.kv import KeyValue

from sdv_events.envelope import Envelope
from sdv_events.ids import split_stream_id
from sdv_events.schemas.deployment import DesiredApp, DesiredState
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceFailed,
    DevicesPlanned,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    PreviousPackages,
    RollbackStarted,
    RollbackStartedV1,
    RolloutAborted,
    RolloutCancelled,
    RolloutCompleted,
    RolloutCreated,
    RolloutPaused,
    RolloutPlanned,
    RolloutPlannedV1,
    RolloutResumed,
)
from sdv_orchestrator.domain.plan_events import expand_v1

_enc = msgspec.json.Encoder()
TERMINAL = ("completed", "aborted", "cancelled", "rolled_back")


def rollout_id_of(event: Envelope) -> str:
    return split_stream_id(event.stream_id)[1]


class RolloutCatalog:
    name = "rollout_catalog"
    filter_subjects = ("sdv.evt.rollout.>",)

    def __init__(self, schema: str) -> None:
        self.schema = schema

    async def create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {self.schema}.rollouts (
                rollout_id text PRIMARY KEY, app text NOT NULL, version text NOT NULL,
                status text NOT NULL, devices integer NOT NULL DEFAULT 0,
                succeeded integer NOT NULL DEFAULT 0, failed integer NOT NULL DEFAULT 0,
                created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
            CREATE TABLE IF NOT EXISTS {self.schema}.reservations (
                device_id text NOT NULL, app text NOT NULL, rollout_id text NOT NULL,
                PRIMARY KEY (device_id, app));
            CREATE INDEX IF NOT EXISTS reservations_rollout ON {self.schema}.reservations (rollout_id);
        """)

    async def reset(self, conn: asyncpg.Connection) -> None:
        await self.create(conn)
        await conn.execute(f"TRUNCATE {self.schema}.rollouts")

    async def _status(self, conn: asyncpg.Connection, rollout_id: str, status: str,
                      at: datetime) -> None:
        await conn.execute(
            f"UPDATE {self.schema}.rollouts SET status = $2, updated_at = $3 WHERE rollout_id = $1",
            rollout_id, status, at,
        )
        if status in TERMINAL:
            await conn.execute(f"DELETE FROM {self.schema}.reservations WHERE rollout_id = $1",
                               rollout_id)

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        rid, at, t = rollout_id_of(event), event.occurred_at, self.schema
        match event.data:
            case RolloutCreated(package=package):
                await conn.execute(
                    f"INSERT INTO {t}.rollouts (rollout_id, app, version, status, created_at, "
                    "updated_at) VALUES ($1, $2, $3, 'created', $4, $4) ON CONFLICT DO NOTHING",
                    rid, package.name, package.version, at,
                )
            case RolloutPlanned() | RolloutPlannedV1():
                devices = (event.data.devices if isinstance(event.data, RolloutPlanned)
                           else sum(len(w) for w in event.data.waves))
                await conn.execute(
                    f"UPDATE {t}.rollouts SET status = 'running', devices = $2, updated_at = $3 "
                    "WHERE rollout_id = $1", rid, devices, at,
                )
            case DeviceSucceeded():
                await conn.execute(f"UPDATE {t}.rollouts SET succeeded = succeeded + 1, "
                                   "updated_at = $2 WHERE rollout_id = $1", rid, at)
            case DeviceFailed() | DeviceTimedOut():
                await conn.execute(f"UPDATE {t}.rollouts SET failed = failed + 1, "
                                   "updated_at = $2 WHERE rollout_id = $1", rid, at)
            case RolloutPaused():
                await self._status(conn, rid, "paused", at)
            case RolloutResumed():
                await self._status(conn, rid, "running", at)
            case RolloutCompleted():
                await self._status(conn, rid, "completed", at)
            case RolloutAborted():
                await self._status(conn, rid, "aborted", at)
            case RolloutCancelled():
                await self._status(conn, rid, "cancelled", at)
            case RollbackStarted() | RollbackStartedV1():
                await self._status(conn, rid, "rolled_back", at)


class DesiredStates:
    name = "desired_states"
    filter_subjects = ("sdv.evt.rollout.>",)

    def __init__(self, schema: str, kv: KeyValue) -> None:
        self.schema = schema
        self.kv = kv
        # rollout id → its package (encoded, decoded): fixed at RolloutCreated, so a cache
        # saves a query and a decode per targeted device.
        self._packages: dict[str, tuple[bytes, PackageInfo]] = {}

    async def create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {self.schema}.rollout_packages (
                rollout_id text PRIMARY KEY, package bytea NOT NULL);
            CREATE TABLE IF NOT EXISTS {self.schema}.device_apps (
                device_id text NOT NULL, app text NOT NULL, package bytea NOT NULL,
                rollout_id text, PRIMARY KEY (device_id, app));
            CREATE TABLE IF NOT EXISTS {self.schema}.device_revisions (
                device_id text PRIMARY KEY, revision bigint NOT NULL);
            CREATE TABLE IF NOT EXISTS {self.schema}.rollout_previous_packages (
                rollout_id text NOT NULL, ref integer NOT NULL, package bytea NOT NULL,
                PRIMARY KEY (rollout_id, ref));
            CREATE TABLE IF NOT EXISTS {self.schema}.rollout_previous (
                rollout_id text NOT NULL, device_id text NOT NULL, ref integer NOT NULL,
                PRIMARY KEY (rollout_id, device_id));
        """)

    async def reset(self, conn: asyncpg.Connection) -> None:
        # Revisions are kept: agents ignore documents not newer than the last one they saw.
        await self.create(conn)
        await conn.execute(f"TRUNCATE {self.schema}.rollout_packages, {self.schema}.device_apps, "
                           f"{self.schema}.rollout_previous_packages, {self.schema}.rollout_previous")
        self._packages.clear()

    async def _package(self, conn: asyncpg.Connection, rollout_id: str) -> tuple[bytes, PackageInfo]:
        cached = self._packages.get(rollout_id)
        if cached is None:
            raw = await conn.fetchval(
                f"SELECT package FROM {self.schema}.rollout_packages WHERE rollout_id = $1", rollout_id)
            cached = self._packages[rollout_id] = (raw, msgspec.json.decode(raw, type=PackageInfo))
        return cached

    async def current(self, conn: asyncpg.Connection | asyncpg.Pool, device_id: str,
                      app: str) -> PackageInfo | None:
        raw = await conn.fetchval(
            f"SELECT package FROM {self.schema}.device_apps WHERE device_id = $1 AND app = $2",
            device_id, app,
        )
        return None if raw is None else msgspec.json.decode(raw, type=PackageInfo)

    async def current_many(self, conn: asyncpg.Connection | asyncpg.Pool, device_ids: list[str],
                           app: str) -> list[tuple[str, bytes]]:
        """(device, encoded package) for the devices that have `app` assigned, in one query."""
        rows = await conn.fetch(
            f"SELECT device_id, package FROM {self.schema}.device_apps "
            "WHERE app = $1 AND device_id = ANY($2::text[])", app, device_ids,
        )
        return [(r["device_id"], r["package"]) for r in rows]

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        rid, t = rollout_id_of(event), self.schema
        match event.data:
            case RolloutCreated(package=package):
                raw = _enc.encode(package)
                await conn.execute(
                    f"INSERT INTO {t}.rollout_packages VALUES ($1, $2) ON CONFLICT DO NOTHING", rid, raw)
                self._packages[rid] = (raw, package)
            case DeviceTargeted(device_id=device_id):
                # The hot path of a rollout (one per device): assign, bump the revision and
                # read the device's other apps in one statement. The SELECT sees the table as
                # it was before the statement, which is right for the other apps; this app's
                # assignment is the one just made.
                raw, package = await self._package(conn, rid)
                rows = await conn.fetch(f"""
                    WITH assigned AS (
                        INSERT INTO {t}.device_apps VALUES ($1, $2, $3, $4)
                        ON CONFLICT (device_id, app)
                        DO UPDATE SET package = excluded.package, rollout_id = excluded.rollout_id),
                    bumped AS (
                        INSERT INTO {t}.device_revisions VALUES ($1, 1) ON CONFLICT (device_id)
                        DO UPDATE SET revision = device_revisions.revision + 1 RETURNING revision)
                    SELECT b.revision, o.app, o.package, o.rollout_id FROM bumped b
                    LEFT JOIN {t}.device_apps o ON o.device_id = $1 AND o.app <> $2""",
                    device_id, package.name, raw, rid)
                apps = {r["app"]: DesiredApp(package=msgspec.json.decode(r["package"], type=PackageInfo),
                                             rollout_id=r["rollout_id"])
                        for r in rows if r["app"] is not None}
                apps[package.name] = DesiredApp(package=package, rollout_id=rid)
                await self._put(device_id, rows[0]["revision"], apps, event.occurred_at)
            case PreviousPackages() | DevicesPlanned():
                await self._plan(conn, rid, event.data)
            case RolloutPlannedV1():
                for planned in expand_v1(event.data):
                    if isinstance(planned, PreviousPackages | DevicesPlanned):
                        await self._plan(conn, rid, planned)
            case RollbackStarted():
                app = (await self._package(conn, rid))[1].name
                # Devices this rollout still owns (a later rollout's devices are left alone),
                # back to the package they ran before it, or without the app if they had none.
                restored = await conn.fetch(f"""
                    WITH owned AS (
                        SELECT a.device_id, p.package FROM {t}.device_apps a
                        LEFT JOIN {t}.rollout_previous r
                            ON r.rollout_id = $1 AND r.device_id = a.device_id
                        LEFT JOIN {t}.rollout_previous_packages p
                            ON p.rollout_id = $1 AND p.ref = r.ref
                        WHERE a.app = $2 AND a.rollout_id = $1),
                    removed AS (
                        DELETE FROM {t}.device_apps a USING owned o
                        WHERE a.device_id = o.device_id AND a.app = $2 AND o.package IS NULL
                        RETURNING a.device_id),
                    updated AS (
                        UPDATE {t}.device_apps a SET package = o.package, rollout_id = NULL
                        FROM owned o
                        WHERE a.device_id = o.device_id AND a.app = $2 AND o.package IS NOT NULL
                        RETURNING a.device_id)
                    SELECT device_id FROM removed UNION ALL SELECT device_id FROM updated
                    ORDER BY device_id""", rid, app)
                for row in restored:
                    await self._write(conn, row["device_id"], event.occurred_at)
            case RollbackStartedV1(devices=devices):
                app = (await self._package(conn, rid))[1].name
                for previous in devices:
                    owner = await conn.fetchval(
                        f"SELECT rollout_id FROM {t}.device_apps WHERE device_id = $1 AND app = $2",
                        previous.device_id, app,
                    )
                    if owner != rid:
                        continue  # a later rollout owns this device's app now: leave it
                    if previous.package is None:
                        await conn.execute(
                            f"DELETE FROM {t}.device_apps WHERE device_id = $1 AND app = $2",
                            previous.device_id, app)
                    else:
                        await conn.execute(
                            f"UPDATE {t}.device_apps SET package = $3, rollout_id = NULL "
                            "WHERE device_id = $1 AND app = $2",
                            previous.device_id, app, _enc.encode(previous.package))
                    await self._write(conn, previous.device_id, event.occurred_at)

    async def _plan(self, conn: asyncpg.Connection, rollout_id: str,
                    chunk: PreviousPackages | DevicesPlanned) -> None:
        t = self.schema
        if isinstance(chunk, PreviousPackages):
            await conn.executemany(
                f"INSERT INTO {t}.rollout_previous_packages VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                [(rollout_id, chunk.first + i, _enc.encode(p)) for i, p in enumerate(chunk.packages)])
            return
        rows = [(d.device_id, d.previous) for d in chunk.devices if d.previous is not None]
        if rows:
            await conn.execute(
                f"INSERT INTO {t}.rollout_previous SELECT $1, d, r "
                "FROM unnest($2::text[], $3::int[]) AS u(d, r) ON CONFLICT DO NOTHING",
                rollout_id, [d for d, _ in rows], [r for _, r in rows])

    async def _write(self, conn: asyncpg.Connection, device_id: str, at: datetime) -> None:
        revision = await conn.fetchval(
            f"INSERT INTO {self.schema}.device_revisions VALUES ($1, 1) ON CONFLICT (device_id) "
            "DO UPDATE SET revision = device_revisions.revision + 1 RETURNING revision", device_id,
        )
        rows = await conn.fetch(
            f"SELECT app, package, rollout_id FROM {self.schema}.device_apps WHERE device_id = $1",
            device_id,
        )
        apps = {
            r["app"]: DesiredApp(package=msgspec.json.decode(r["package"], type=PackageInfo),
                                 rollout_id=r["rollout_id"])
            for r in rows
        }
        await self._put(device_id, revision, apps, at)

    async def _put(self, device_id: str, revision: int, apps: dict[str, DesiredApp],
                   at: datetime) -> None:
        doc = DesiredState(device_id=device_id, revision=revision, apps=apps, updated_at=at)
        await self.kv.put(device_id, _enc.encode(doc))
