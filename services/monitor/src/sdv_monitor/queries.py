"""Reads over the monitor's read models, shared by its NATS queries and its HTTP API. Every
read is one page at most; results are the shared view types (`sdv_events.schemas.monitor`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg
import msgspec

from sdv_events.ids import stream_id
from sdv_events.schemas.monitor import (
    AlertPage,
    AlertView,
    AppVersionRow,
    AppVersions,
    DeviceApp,
    DeviceDetail,
    DevicePage,
    ExcludedDeviceRow,
    FleetDevice,
    FleetStatus,
    HistoryEntry,
    PackagePage,
    PackageRow,
    RolloutDetail,
    RolloutDevice,
    RolloutPage,
    RolloutRow,
    RolloutWave,
)
from sdv_events.schemas.rollouts import Thresholds, Timeouts
from sdv_events.schemas.scheduling import Schedule
from sdv_monitor.where import Where

ACTIVE = ("created", "running", "waiting", "paused")
V = TypeVar("V", bound=msgspec.Struct)


def _row(cls: type[V], record: asyncpg.Record, **extra: Any) -> V:
    """The view `cls` from a row's columns of the same names (`extra` overrides)."""
    fields = {f: record[f] for f in cls.__struct_fields__ if f in record and f not in extra}
    return cls(**fields, **extra)


def _device(record: asyncpg.Record) -> FleetDevice:
    return _row(FleetDevice, record, labels=msgspec.json.decode(record["labels"] or "{}"))


class _Terms(msgspec.Struct, frozen=True):
    thresholds: Thresholds | None = None
    timeouts: Timeouts | None = None
    auto_rollback: bool | None = None
    schedule: Schedule | None = None


def _terms(created: str | None) -> _Terms:
    """A rollout's thresholds and timeouts from its recorded `RolloutCreated` (empty: unreadable)."""
    try:
        return msgspec.json.decode(created or "{}", type=_Terms)
    except msgspec.ValidationError:
        return _Terms()


class Queries:
    def __init__(self, pool: asyncpg.Pool, schema: str,
                 live: Callable[[DeviceDetail], DeviceDetail] = lambda detail: detail) -> None:
        self.pool = pool
        self.s = schema
        self.live = live  # adds what the device's latest heartbeat says (not stored)

    # --- devices ---------------------------------------------------------------------------

    def _devices_sql(self, where: str) -> str:
        s = self.s
        return f"""
            SELECT d.device_id, d.status, d.online, d.last_seen_at, d.labels::text AS labels,
                   coalesce(r.agent_version, d.agent_version) AS agent_version, d.arch, d.hardware_type,
                   d.admitted_by, d.updated_at,
                   (SELECT count(*) FROM {s}.device_apps a WHERE a.device_id = d.device_id)::int AS apps,
                   (SELECT count(*) FROM {s}.device_apps a WHERE a.device_id = d.device_id
                        AND a.state = 'FAILED')::int AS apps_failed
            FROM {s}.devices d LEFT JOIN {s}.reported_devices r ON r.device_id = d.device_id
            WHERE {where}"""

    async def devices(self, *, status: str | None = None, online: bool | None = None,
                      app: str | None = None, limit: int = 100, offset: int = 0) -> DevicePage:
        where = Where().equal("d.status", status).equal("d.online", online).add(
            f"EXISTS (SELECT 1 FROM {self.s}.device_apps a WHERE a.device_id = d.device_id AND a.app = $?)",
            app)
        async with self.pool.acquire() as conn:
            total = await conn.fetchval(f"SELECT count(*) FROM {self.s}.devices d WHERE {where.clause}",
                                        *where.params)
            rows = await conn.fetch(self._devices_sql(where.clause) + f" ORDER BY d.device_id {where.page()}",
                                    *where.params, limit, offset)
        return DevicePage(items=[_device(r) for r in rows], total=int(total), offset=offset, limit=limit)

    async def device(self, device_id: str, *, history_limit: int = 50) -> DeviceDetail | None:
        s = self.s
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(self._devices_sql("d.device_id = $1"), device_id)
            if row is None:
                return None
            caps = await conn.fetchval(f"SELECT capabilities::text FROM {s}.devices WHERE device_id = $1",
                                       device_id)
            apps = await conn.fetch(f"""
                SELECT a.app, a.desired_version, a.desired_rollout, a.installed_version, a.state,
                       a.healthy, a.last_error, a.since, r.restarts, r.state AS reported_state, r.pid
                FROM {s}.device_apps a LEFT JOIN {s}.reported_apps r
                    ON r.device_id = a.device_id AND r.app = a.app
                WHERE a.device_id = $1 ORDER BY a.app""", device_id)
            history = await conn.fetch(f"""
                SELECT at, source, type, summary, app, rollout_id FROM {s}.device_history
                WHERE device_id = $1 ORDER BY at DESC, event_id DESC LIMIT $2""", device_id, history_limit)
        return self.live(DeviceDetail(
            device=_device(row), capabilities=msgspec.json.decode(caps) if caps else None,
            apps=[_row(DeviceApp, a) for a in apps], history=[_row(HistoryEntry, h) for h in history]))

    # --- rollouts --------------------------------------------------------------------------

    async def rollouts(self, *, app: str | None = None, status: str | None = None,
                       limit: int = 100, offset: int = 0) -> RolloutPage:
        where = Where().equal("app", app).equal("status", status)
        rows, total = await self._page("rollouts", where, "created_at DESC, rollout_id", limit, offset)
        return RolloutPage(items=[_row(RolloutRow, r) for r in rows], total=total, offset=offset,
                           limit=limit)

    async def rollout(self, rollout_id: str, *, limit: int = 1000, offset: int = 0) -> RolloutDetail | None:
        s = self.s
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(f"SELECT * FROM {s}.rollouts WHERE rollout_id = $1", rollout_id)
            if row is None:
                return None
            waves = await conn.fetch(f"SELECT * FROM {s}.rollout_waves WHERE rollout_id = $1 ORDER BY wave",
                                     rollout_id)
            total = await conn.fetchval(f"SELECT count(*) FROM {s}.rollout_devices WHERE rollout_id = $1",
                                        rollout_id)
            devices = await conn.fetch(f"SELECT * FROM {s}.rollout_devices WHERE rollout_id = $1 "
                                       "ORDER BY wave, device_id LIMIT $2 OFFSET $3",
                                       rollout_id, limit, offset)
            statuses = await conn.fetch(f"SELECT status, count(*)::int AS n FROM {s}.rollout_devices "
                                        "WHERE rollout_id = $1 GROUP BY status", rollout_id)
            excluded = await conn.fetch(f"SELECT device_id, reason FROM {s}.rollout_excluded "
                                        "WHERE rollout_id = $1 ORDER BY device_id LIMIT $2",
                                        rollout_id, limit)
            # The rollout's terms are not a column of the views: its first event, in the audit trail.
            created = await conn.fetchval(
                f"SELECT data::text FROM {s}.audit_events WHERE stream_id = $1 AND version = 1 "
                "AND type LIKE 'orchestrator.RolloutCreated%'", stream_id("rollout", rollout_id))
        terms = _terms(created)
        return RolloutDetail(rollout=_row(RolloutRow, row), waves=[_row(RolloutWave, w) for w in waves],
                             devices=[_row(RolloutDevice, d) for d in devices], devices_total=int(total),
                             excluded=[_row(ExcludedDeviceRow, e) for e in excluded], offset=offset,
                             limit=limit, thresholds=terms.thresholds, timeouts=terms.timeouts,
                             auto_rollback=terms.auto_rollback, schedule=terms.schedule,
                             statuses={r["status"]: r["n"] for r in statuses})

    # --- software across the fleet ----------------------------------------------------------

    async def app_versions(self, *, limit: int = 500) -> AppVersions:
        """Per app and version: on how many devices it is installed, running, desired, failed."""
        rows = await self.pool.fetch(f"""
            SELECT app, version, sum(installed)::int AS installed, sum(running)::int AS running,
                   sum(desired)::int AS desired, sum(failed)::int AS failed
            FROM (SELECT app, installed_version AS version, 1 AS installed,
                         (state = 'RUNNING')::int AS running, 0 AS desired, 0 AS failed
                  FROM {self.s}.device_apps WHERE installed_version IS NOT NULL
                  UNION ALL
                  SELECT app, desired_version, 0, 0, 1, (state = 'FAILED')::int
                  FROM {self.s}.device_apps WHERE desired_version IS NOT NULL) v
            GROUP BY app, version ORDER BY app, version LIMIT $1""", limit)
        return AppVersions(items=[_row(AppVersionRow, r) for r in rows])

    # --- packages --------------------------------------------------------------------------

    async def packages(self, *, name: str | None = None, channel: str | None = None,
                       include_yanked: bool = True, limit: int = 100, offset: int = 0) -> PackagePage:
        s = self.s
        where = Where().equal("p.name", name).equal("p.channel", channel)
        if not include_yanked:
            where.term("NOT p.yanked")
        async with self.pool.acquire() as conn:
            total = await conn.fetchval(f"SELECT count(*) FROM {s}.packages p WHERE {where.clause}",
                                        *where.params)
            rows = await conn.fetch(f"""
                SELECT p.*,
                    (SELECT count(*) FROM {s}.device_apps a WHERE a.app = p.name
                        AND a.installed_digest = p.digest)::int AS installed_on,
                    (SELECT count(*) FROM {s}.device_apps a WHERE a.app = p.name
                        AND a.desired_digest = p.digest)::int AS desired_on
                FROM {s}.packages p WHERE {where.clause} ORDER BY p.name, p.published_at DESC
                {where.page()}""", *where.params, limit, offset)
        return PackagePage(items=[_row(PackageRow, r) for r in rows], total=int(total), offset=offset,
                           limit=limit)

    # --- one screen ------------------------------------------------------------------------

    async def status(self) -> FleetStatus:
        s = self.s
        async with self.pool.acquire() as conn:
            by_status = await conn.fetch(f"SELECT status, count(*) AS n, count(*) FILTER (WHERE online) "
                                         f"AS up FROM {s}.devices GROUP BY status")
            apps = await conn.fetch(f"SELECT state, count(*) AS n FROM {s}.device_apps GROUP BY state")
            active = await conn.fetch(f"SELECT * FROM {s}.rollouts WHERE status = ANY($1) "
                                      "ORDER BY created_at DESC LIMIT 20", list(ACTIVE))
            alerts = await conn.fetch(f"SELECT severity, count(*) AS n FROM {s}.alerts "
                                      "WHERE state <> 'resolved' GROUP BY severity")
        return FleetStatus(devices=sum(r["n"] for r in by_status), online=sum(r["up"] for r in by_status),
                           by_status={r["status"]: r["n"] for r in by_status},
                           apps_by_state={r["state"]: r["n"] for r in apps},
                           active_rollouts=[_row(RolloutRow, r) for r in active],
                           open_alerts={r["severity"]: r["n"] for r in alerts})

    # --- alerts ------------------------------------------------------------------------------

    async def alerts(self, *, state: str = "active", kind: str | None = None, device: str | None = None,
                     limit: int = 100, offset: int = 0) -> AlertPage:
        states = {"active": ["open", "acknowledged"], "all": None}.get(state, [state])
        where = Where().add("state = ANY($?)", states).equal("kind", kind).equal("device_id", device)
        rows, total = await self._page("alerts", where, "raised_at DESC, alert_id", limit, offset)
        return AlertPage(items=[_row(AlertView, r) for r in rows], total=total, offset=offset,
                         limit=limit)

    async def _page(self, table: str, where: Where, order: str, limit: int, offset: int
                    ) -> tuple[list[asyncpg.Record], int]:
        """One page of a table's rows matching `where`, and how many match in all."""
        async with self.pool.acquire() as conn:
            total = await conn.fetchval(f"SELECT count(*) FROM {self.s}.{table} WHERE {where.clause}",
                                        *where.params)
            rows = await conn.fetch(f"SELECT * FROM {self.s}.{table} WHERE {where.clause} ORDER BY {order} "
                                    f"{where.page()}", *where.params, limit, offset)
        return rows, int(total)
