"""Read models of the orchestrator, fed from its own rollout events (`sdv.evt.rollout.>`) and
the registry's presence events:

- `RolloutCatalog`: one summary row per rollout (list, active rollouts for the ticker, rollbacks
  still followed);
- `Presence`: whether each device is online, as the registry's heartbeat tracking last said
  (what the ticker asks about devices past their deadline);
- `DesiredStates`: per device the app assignments the rollouts made, and the desired-state
  document in KV `sdv_desired` — a projection of events, so it can be rebuilt. No network I/O
  inside the read-model transaction: `apply` marks the device dirty (a row, committed with the
  rest), and `after_commit` writes the documents of dirty devices to KV, then clears their marks;
  a crash between the commit and the write leaves the mark, drained at the next start. A
  rebuild replays into shadow tables without writing anything, then compares every device's
  document with KV and writes only those that differ. It keeps each rollout's previous
  packages (from its plan chunks) so that a rollback, which names no device, finds them in its
  own tables: the devices the rollout still owns and the package each ran before. A restored
  assignment names the rollout that rolled it back (and `rollback`), so the device's facts
  about it are that rollout's. Every document is signed with the orchestrator's key
  (`sdv_events.desired_signing`): agents act on nothing else. A rollout with activation gates
  or a hold (its schedule) gives its devices' documents an `Activation`: the gates, and the
  hold until `ActivationRequested` releases it (a new revision); an assignment a rollback
  restored carries none (it switches back at once: the version it leaves failed).

Each `apply` only matches events; the tables are declared in `sql/*.sql` (set up by
`sdv_events.store.schema.ensure_read_models`) and written and queried through the views in
`adapters/*_view.py`. Device reservations are the write side's (adapters/reservations.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg
import msgspec
import structlog
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from sdv_events.desired_signing import DesiredSigner, UntrustedDesired
from sdv_events.envelope import Envelope, TraceContext
from sdv_events.ids import split_stream_id
from sdv_events.schemas.deployment import Activation, DesiredApp, DesiredState
from sdv_events.schemas.devices import DeviceCameOnline, DeviceWentOffline
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceFailed,
    DeviceOffline,
    DevicesPlanned,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    PreviousPackages,
    RollbackCompleted,
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
from sdv_events.schemas.scheduling import ActivationRequested, Schedule
from sdv_orchestrator.adapters.desired_view import DesiredView
from sdv_orchestrator.adapters.presence_view import PresenceView
from sdv_orchestrator.adapters.rollouts_view import RolloutsView
from sdv_orchestrator.domain.plan_events import expand_v1

log = structlog.get_logger("sdv.orchestrator.desired")
_enc = msgspec.json.Encoder()
# Dirty devices whose documents are written per round after a commit.
DRAIN_BATCH = 512


def rollout_id_of(event: Envelope) -> str:
    return split_stream_id(event.stream_id)[1]


class RolloutCatalog:
    """Matches the rollout events; its view (adapters/rollouts_view.py) owns the table. The
    device reservations are the write side's (adapters/reservations.py): neither this read
    model nor its rebuild touches them."""

    name = "rollout_catalog"
    filter_subjects = ("sdv.evt.rollout.>",)
    tables = RolloutsView.tables

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.view = RolloutsView(schema)

    def at(self, schema: str) -> RolloutCatalog:
        return RolloutCatalog(schema)

    async def create(self, conn: asyncpg.Connection) -> None:
        await self.view.create(conn)

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        rid, at, view = rollout_id_of(event), event.occurred_at, self.view
        match event.data:
            case RolloutCreated(package=package, schedule=schedule):
                await view.created(conn, rid, package.name, package.version, at,
                                   None if schedule == Schedule() else _enc.encode(schedule))
            case RolloutPlanned(devices=devices):
                await view.planned(conn, rid, devices, at)
            case RolloutPlannedV1(waves=waves):
                await view.planned(conn, rid, sum(len(w) for w in waves), at)
            case DeviceSucceeded():
                await view.succeeded(conn, rid, at)
            case DeviceFailed() | DeviceTimedOut() | DeviceOffline(outcome="failed"):
                await view.failed(conn, rid, at)
            case RolloutPaused():
                await view.status(conn, rid, "paused", at)
            case RolloutResumed():
                await view.status(conn, rid, "running", at)
            case RolloutCompleted():
                await view.status(conn, rid, "completed", at)
            case RolloutAborted():
                await view.status(conn, rid, "aborted", at)
            case RolloutCancelled():
                await view.status(conn, rid, "cancelled", at)
            case RollbackStarted() | RollbackStartedV1():
                await view.rollback_started(conn, rid, at)
            case RollbackCompleted():
                await view.rollback_completed(conn, rid, at)


class Presence:
    """Devices' presence from the registry's `DeviceCameOnline` / `DeviceWentOffline` (its
    heartbeat tracking); the latest event per device wins (the runner applies a device's
    stream in version order). Its view (adapters/presence_view.py) owns the table."""

    name = "presence"
    filter_subjects = ("sdv.evt.device.*.DeviceCameOnline", "sdv.evt.device.*.DeviceWentOffline")
    tables = PresenceView.tables

    def __init__(self, schema: str, pool: asyncpg.Pool | None = None) -> None:
        self.schema = schema
        self.pool = pool
        self.view = PresenceView(schema)

    def at(self, schema: str) -> Presence:
        return Presence(schema, self.pool)

    async def create(self, conn: asyncpg.Connection) -> None:
        await self.view.create(conn)

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        match event.data:
            case DeviceCameOnline(device_id=device_id, seen_at=at):
                await self.view.seen(conn, device_id, True, at)
            case DeviceWentOffline(device_id=device_id, last_seen_at=at):
                await self.view.seen(conn, device_id, False, at)

    async def of(self, device_ids: list[str]) -> dict[str, bool]:
        """Online (True) or not, for the devices the registry has said something about."""
        assert self.pool is not None, "Presence needs a pool to answer"
        return await self.view.of(self.pool, device_ids)


class DesiredStates:
    """Matches the rollout events; its view (adapters/desired_view.py) owns the tables. Keeps
    what a rollout's events need per device (its package, whether it holds) in memory, and
    writes the signed documents to KV after the commit."""

    name = "desired_states"
    filter_subjects = ("sdv.evt.rollout.>",)
    tables = DesiredView.tables

    def __init__(self, schema: str, kv: KeyValue, signer: DesiredSigner,
                 pool: asyncpg.Pool | None = None, *, replaying: bool = False) -> None:
        self.schema = schema
        self.kv = kv
        self.signer = signer
        self.verifier = signer.verifier()
        self.pool = pool
        self.view = DesiredView(schema)
        # A rebuild's shadow: marks nothing dirty (the swap compares every device with KV).
        self.replaying = replaying
        # rollout id → its package (encoded, decoded): fixed at RolloutCreated, so a cache
        # saves a query and a decode per targeted device.
        self._packages: dict[str, tuple[bytes, PackageInfo]] = {}
        self._holds: dict[str, bool] = {}  # rollout id → whether it holds its devices

    async def create(self, conn: asyncpg.Connection) -> None:
        await self.view.create(conn)

    def at(self, schema: str) -> DesiredStates:
        return DesiredStates(schema, self.kv, self.signer, self.pool, replaying=True)

    async def seed(self, conn: asyncpg.Connection, live_schema: str) -> None:
        """Revisions carry over into a rebuild: agents ignore documents not newer than the last
        one they saw, so a rebuilt document must count on from the live revision."""
        await self.view.seed(conn, live_schema)

    async def _package(self, conn: asyncpg.Connection, rollout_id: str) -> tuple[bytes, PackageInfo]:
        cached = self._packages.get(rollout_id)
        if cached is None:
            raw = await self.view.package(conn, rollout_id)
            assert raw is not None, f"no package for rollout {rollout_id}"
            cached = self._packages[rollout_id] = (raw, msgspec.json.decode(raw, type=PackageInfo))
        return cached

    async def _holds_devices(self, conn: asyncpg.Connection, rollout_id: str) -> bool:
        held = self._holds.get(rollout_id)
        if held is None:
            held = self._holds[rollout_id] = await self.view.holds(conn, rollout_id)
        return held

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        rid, view, at = rollout_id_of(event), self.view, event.occurred_at
        match event.data:
            case RolloutCreated(package=package, schedule=schedule):
                raw = _enc.encode(package)
                # Agents' work for this rollout joins its trace.
                await view.rollout_created(conn, rid, raw,
                                           schedule.gates if schedule.defers else None,
                                           schedule.hold, event.trace.traceparent,
                                           event.trace.tracestate)
                self._packages[rid] = (raw, package)
                self._holds[rid] = schedule.hold
            case DeviceTargeted(device_id=device_id):
                raw, package = await self._package(conn, rid)
                await view.target(conn, device_id, package.name, raw, rid,
                                  await self._holds_devices(conn, rid))
                await self._mark(conn, [device_id], at)
            case ActivationRequested(device_ids=device_ids, all=everyone):
                app = (await self._package(conn, rid))[1].name
                released = await view.release_held(conn, rid, app, everyone, device_ids)
                await self._write_many(conn, released, at)
            case PreviousPackages() | DevicesPlanned():
                await self._plan(conn, rid, event.data)
            case RolloutPlannedV1():
                for planned in expand_v1(event.data):
                    if isinstance(planned, PreviousPackages | DevicesPlanned):
                        await self._plan(conn, rid, planned)
            case RollbackStarted():
                app = (await self._package(conn, rid))[1].name
                for device_id in await view.restore(conn, rid, app):
                    await self._write(conn, device_id, at)
            case RollbackStartedV1(devices=devices):
                app = (await self._package(conn, rid))[1].name
                for previous in devices:
                    if await view.owner(conn, previous.device_id, app) != rid:
                        continue  # a later rollout owns this device's app now: leave it
                    if previous.package is None:
                        await view.unassign(conn, previous.device_id, app)
                    else:
                        await view.restore_one(conn, previous.device_id, app,
                                               _enc.encode(previous.package))
                    await self._write(conn, previous.device_id, at)

    async def _plan(self, conn: asyncpg.Connection, rollout_id: str,
                    chunk: PreviousPackages | DevicesPlanned) -> None:
        if isinstance(chunk, PreviousPackages):
            await self.view.previous_packages(
                conn, rollout_id, [(chunk.first + i, _enc.encode(p)) for i, p in enumerate(chunk.packages)])
            return
        rows = [(d.device_id, d.previous) for d in chunk.devices if d.previous is not None]
        if rows:
            await self.view.previous(conn, rollout_id, rows)

    async def _write(self, conn: asyncpg.Connection, device_id: str, at: datetime) -> None:
        await self.view.bump(conn, device_id)
        await self._mark(conn, [device_id], at)

    async def _write_many(self, conn: asyncpg.Connection, device_ids: list[str],
                          at: datetime) -> None:
        if not device_ids:
            return
        await self.view.bump_many(conn, device_ids)
        await self._mark(conn, device_ids, at)

    async def _mark(self, conn: asyncpg.Connection, device_ids: list[str], at: datetime) -> None:
        """The device's document must be (re)written to KV once this transaction commits."""
        if self.replaying:
            return
        await self.view.mark(conn, device_ids, at)

    # --- side effects, after the commit (sdv_events.processing.WithSideEffects) -------------

    async def after_commit(self) -> None:
        """Write the documents of dirty devices to KV, then clear their marks (a mark set
        again meanwhile stays: its newer document is written next time)."""
        assert self.pool is not None, "DesiredStates needs a pool to write documents"
        while True:
            dirty = await self.view.dirty(self.pool, DRAIN_BATCH)
            if not dirty:
                return
            docs = await self._documents(self.pool, [r["device_id"] for r in dirty])
            for start in range(0, len(dirty), 64):
                await asyncio.gather(*(self._put(docs[r["device_id"]], r["at"], verify=r["verify"])
                                       for r in dirty[start:start + 64]))
            await self.view.clear(self.pool, [r["device_id"] for r in dirty],
                                  [r["gen"] for r in dirty])
            if len(dirty) < DRAIN_BATCH:
                return

    async def after_swap(self, conn: asyncpg.Connection) -> None:
        """A rebuild was swapped in: every device that ever had a document is checked against
        KV, and only a document that differs is written."""
        await self.view.mark_all_to_verify(conn)

    async def after_rebuild(self) -> None:
        await self.after_commit()

    async def _documents(self, conn: asyncpg.Pool, device_ids: list[str]
                         ) -> dict[str, tuple[int, dict[str, DesiredApp], str]]:
        """Per device: its revision and apps, as the tables say now."""
        revisions = await self.view.revisions(conn, device_ids)
        apps: dict[str, dict[str, DesiredApp]] = {d: {} for d in device_ids}
        for r in await self.view.assignments(conn, device_ids):
            # Only a rollback may take a device back to an older version (rows restored
            # before `rollback` existed have no rollout instead).
            rollback = r["rollback"] or r["rollout_id"] is None
            apps[r["device_id"]][r["app"]] = DesiredApp(
                package=msgspec.json.decode(r["package"], type=PackageInfo),
                rollout_id=r["rollout_id"], rollback=rollback,
                trace=TraceContext(r["traceparent"], r["tracestate"]),
                activation=None if rollback or not (r["gates"] or r["held"])
                else Activation(gates=list(r["gates"] or []), hold=r["held"]))
        return {d: (revisions.get(d, 0), apps[d], d) for d in device_ids}

    async def _put(self, doc: tuple[int, dict[str, DesiredApp], str], at: datetime, *,
                   verify: bool) -> None:
        revision, apps, device_id = doc
        if verify and await self._unchanged(device_id, apps):
            return
        state = DesiredState(device_id=device_id, revision=revision, apps=apps, updated_at=at)
        await self.kv.put(device_id, self.signer.sign(state))

    async def _unchanged(self, device_id: str, apps: dict[str, DesiredApp]) -> bool:
        """Whether KV holds a document this orchestrator signed for the device with these apps
        (one it did not sign, or that does not verify, is rewritten: agents refuse it)."""
        try:
            entry = await self.kv.get(device_id)
        except KeyNotFoundError:
            return not apps
        if entry.value is None:
            return not apps
        try:
            current = self.verifier.open(entry.value, device_id=device_id)
        except UntrustedDesired as refused:
            log.warning("desired_document_in_kv_untrusted", device_id=device_id, cause=refused.cause,
                        reason=str(refused))
            return False
        return current.apps == apps
