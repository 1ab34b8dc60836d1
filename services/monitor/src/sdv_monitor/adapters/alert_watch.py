"""Alerts as events: every few seconds, read the fleet's state, let the pure rules
(`domain/alerts.py`) say what holds, and record `AlertRaised` / `AlertResolved` in the monitor's
own store — one stream per condition (`alert-<key>`), appended with the version it was read at,
so two monitors never raise the same alert twice. Operators acknowledge; conditions resolve."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import structlog
from nats.aio.client import Client as NatsClient

from sdv_events.bus import CommandClient, CommandError, Conflict, NotFound
from sdv_events.envelope import Metadata
from sdv_events.errors import ConcurrencyConflict
from sdv_events.ids import split_stream_id, stream_id
from sdv_events.schemas.monitor import (
    ALERT_CATEGORY,
    AlertAcknowledged,
    AlertRaised,
    AlertResolved,
    AlertView,
)
from sdv_events.service import Ping, ServiceHealth
from sdv_events.store.postgres import EventStore
from sdv_monitor.adapters.heartbeats import HeartbeatTracker
from sdv_monitor.domain.alerts import (
    AppRow,
    Condition,
    DeviceRow,
    RolloutRow,
    Snapshot,
    Thresholds,
    conditions,
    decide,
)

log = structlog.get_logger("sdv.monitor.alerts")
PEERS = ("packager", "registry", "orchestrator")
# A heartbeat older than this says nothing about a device's databroker any more.
DATABROKER_FRESH_S = 30.0
ACTOR = Metadata(actor="monitor")


@dataclass
class Open:
    version: int  # of its stream
    alert_id: str | None  # the open alert, None when the last one was resolved
    raised: int  # how many times this condition was raised


class AlertWatch:
    def __init__(self, store: EventStore, schema: str, nc: NatsClient, heartbeats: HeartbeatTracker,
                 own_problems: Callable[[], Awaitable[list[str]]], *, thresholds: Thresholds,
                 every_s: float = 5.0, service_grace_s: float = 15.0) -> None:
        self.store, self.s, self.nc = store, schema, nc
        self.heartbeats = heartbeats
        self.own_problems = own_problems
        self.thresholds = thresholds
        self.every_s = every_s
        self.service_grace_s = service_grace_s
        self.streams: dict[str, Open] = {}
        self._unhealthy_since: dict[str, float] = {}
        self.evaluations = 0
        # The latest ping answer of each peer (None: it did not answer), for /metrics.
        self.health: dict[str, ServiceHealth | None] = {}

    async def run(self, stop: asyncio.Event) -> None:
        await self.load()
        await self.heartbeats.start(self.nc)
        try:
            while not stop.is_set():
                await self.evaluate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.every_s)
        finally:
            await self.heartbeats.stop()

    async def load(self) -> None:
        self.streams.clear()
        for sid in await self.store.stream_ids(ALERT_CATEGORY):
            await self._reload(sid)

    async def _reload(self, sid: str) -> Open:
        state = Open(0, None, 0)
        for event in await self.store.read_stream(sid):
            state.version = event.version
            match event.data:
                case AlertRaised(alert_id=alert_id):
                    state.alert_id, state.raised = alert_id, state.raised + 1
                case AlertResolved():
                    state.alert_id = None
        self.streams[split_stream_id(sid)[1]] = state
        return state

    # --- evaluation --------------------------------------------------------------------------

    async def evaluate(self) -> None:
        now = datetime.now(UTC)
        holding = conditions(await self.snapshot(), self.thresholds, now)
        open_keys = [k for k, s in self.streams.items() if s.alert_id is not None]
        decision = decide(open_keys, holding)
        for condition in decision.raise_:
            await self._raise(condition)
        for key in decision.resolve:
            await self._resolve(key, "the condition cleared")
        self.evaluations += 1

    async def _append(self, key: str, body: msgspec.Struct, metadata: Metadata = ACTOR) -> bool:
        sid = stream_id(ALERT_CATEGORY, key)
        state = self.streams.get(key) or Open(0, None, 0)
        try:
            await self.store.append(sid, state.version, [body], metadata=metadata)
        except ConcurrencyConflict:
            await self._reload(sid)  # another monitor wrote meanwhile: judge again next round
            return False
        return True

    async def _raise(self, c: Condition) -> None:
        state = self.streams.get(c.key) or Open(0, None, 0)
        alert_id = f"{c.key}.{state.raised + 1}"
        body = AlertRaised(alert_id=alert_id, kind=c.kind, subject=c.subject, severity=c.severity,
                           message=c.message, device_id=c.device_id, rollout_id=c.rollout_id)
        if await self._append(c.key, body):
            self.streams[c.key] = Open(state.version + 1, alert_id, state.raised + 1)
            log.warning("alert_raised", alert_id=alert_id, kind=c.kind, subject=c.subject, message=c.message)

    async def _resolve(self, key: str, reason: str, metadata: Metadata = ACTOR) -> None:
        state = self.streams[key]
        if state.alert_id is not None and await self._append(
                key, AlertResolved(alert_id=state.alert_id, reason=reason), metadata):
            log.info("alert_resolved", alert_id=state.alert_id, reason=reason)
            self.streams[key] = Open(state.version + 1, None, state.raised)

    async def acknowledge(self, alert_id: str, note: str, metadata: Metadata) -> AlertView:
        key = alert_id.rsplit(".", 1)[0]
        state = self.streams.get(key)
        if state is None or state.alert_id is None:
            raise NotFound(f"no open alert {alert_id!r}")
        if state.alert_id != alert_id:
            raise Conflict(f"alert {alert_id!r} was resolved; {state.alert_id!r} is the open one")
        if not await self._append(key, AlertAcknowledged(alert_id=alert_id, note=note), metadata):
            raise Conflict(f"alert {alert_id!r} changed meanwhile: try again")
        self.streams[key] = Open(state.version + 1, alert_id, state.raised)
        return await self.view(key, alert_id)

    async def view(self, key: str, alert_id: str) -> AlertView:
        """The alert as its stream in the store tells it (the read model follows shortly)."""
        view: AlertView | None = None
        for event in await self.store.read_stream(stream_id(ALERT_CATEGORY, key)):
            match event.data:
                case AlertRaised() as a if a.alert_id == alert_id:
                    view = AlertView(alert_id=a.alert_id, kind=a.kind, subject=a.subject,
                                     severity=a.severity, state="open", message=a.message,
                                     device_id=a.device_id, rollout_id=a.rollout_id,
                                     raised_at=event.occurred_at)
                case AlertAcknowledged() as a if view is not None and a.alert_id == alert_id:
                    view = msgspec.structs.replace(view, state="acknowledged", acknowledged_by=event.actor,
                                                   acknowledged_at=event.occurred_at)
                case AlertResolved() as a if view is not None and a.alert_id == alert_id:
                    view = msgspec.structs.replace(view, state="resolved", resolved_at=event.occurred_at,
                                                   resolution=a.reason)
        if view is None:
            raise NotFound(f"no alert {alert_id!r}")
        return view

    # --- what the rules look at ----------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """What the rules need, read in proportion to what is wrong, not to the fleet: the
        offline devices (the rule decides which have been silent too long; an online device
        raises nothing), and of the devices whose heartbeat found no databroker, those that
        should have one. Reading every device every round blocked the event loop for 25 ms
        at 10,000 devices, 100 ms and more on a busy machine: SSE clients saw those stalls
        (bench/monitor.py)."""
        s = self.s
        suspects = self.heartbeats.without_databroker(fresh_s=DATABROKER_FRESH_S)
        async with self.store.pool.acquire() as conn:
            devices = await conn.fetch(
                "SELECT device_id, online, last_seen_at, "
                "coalesce((capabilities->'kuksa'->>'present')::bool, false) AS kuksa "
                f"FROM {s}.devices WHERE status = 'accepted' AND NOT online")
            expected = {r["device_id"] for r in await conn.fetch(
                f"SELECT device_id FROM {s}.devices WHERE device_id = ANY($1::text[]) "
                "AND status = 'accepted' AND online "
                "AND coalesce((capabilities->'kuksa'->>'present')::bool, false)", suspects)} \
                if suspects else set()
            apps = await conn.fetch(f"""
                SELECT a.device_id, a.app, a.state, a.last_error, r.restarts, r.state AS reported_state
                FROM {s}.device_apps a LEFT JOIN {s}.reported_apps r ON r.device_id = a.device_id
                    AND r.app = a.app
                WHERE a.state = 'FAILED' OR r.restarts >= $1""", self.thresholds.crash_restarts)
            failed = await conn.fetch(f"""
                SELECT r.rollout_id, r.app, r.status, r.reason FROM {s}.rollouts r
                WHERE r.status IN ('aborted', 'rolled_back') AND NOT EXISTS (
                    SELECT 1 FROM {s}.rollouts later WHERE later.app = r.app
                    AND later.status = 'completed' AND later.created_at > r.created_at)""")
        return Snapshot(
            devices=[DeviceRow(d["device_id"], d["online"], d["last_seen_at"], d["kuksa"])
                     for d in devices],
            apps=[AppRow(a["device_id"], a["app"], a["state"], a["last_error"], a["restarts"],
                         a["reported_state"]) for a in apps],
            failed_rollouts=[RolloutRow(r["rollout_id"], r["app"], r["status"], r["reason"]) for r in failed],
            services=await self._services(),
            databroker_missing=self.heartbeats.databroker_missing(expected, fresh_s=DATABROKER_FRESH_S))

    async def _services(self) -> dict[str, list[str]]:
        client = CommandClient(self.nc, actor="service:monitor", timeout=2.0)

        async def problems_of(service: str) -> list[str]:
            try:
                health = await client.call(service, "ping", Ping(), ServiceHealth)
            except CommandError as exc:
                self.health[service] = None
                return [f"does not answer ping ({exc.code})"]
            self.health[service] = health
            return list(health.problems)

        found = dict(zip(PEERS, await asyncio.gather(*(problems_of(p) for p in PEERS)), strict=True))
        found["monitor"] = [p for p in await self.own_problems() if not p.startswith("alerts:")]
        now = time.monotonic()
        steady: dict[str, list[str]] = {}
        for service, problems in found.items():  # a restart of a few seconds is not an alert
            if not problems:
                self._unhealthy_since.pop(service, None)
                continue
            since = self._unhealthy_since.setdefault(service, now)
            if now - since >= self.service_grace_s:
                steady[service] = problems
        return steady
