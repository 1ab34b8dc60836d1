"""Orchestrator use cases over the rollout decider and the shared command runner.

Starting a rollout is where the world is consulted: the registry for the target's devices, their
capabilities and presence, the desired-state read model for what each device runs now (to roll
back to), and the reservations (adapters/reservations.py, the write side's own table), which
enforce one active rollout per (device, app): a start that overlaps an active rollout is refused
with the devices named (not queued). A rollout's terminal event releases its reservations once
appended (`run`); a start finds and releases those of an ended rollout a crash left behind.

A create that starts is one decision (created, planned and the first wave in one append), taken
after the peers answered: a create that cannot start stores nothing, and its error names the
service that did not answer. A retry with the same idempotency key returns the first rollout.

Every event carries who acted (the operator or policy of the command, `system` for devices'
reports and the ticker) and what caused it (the command, the device's fact, the timer tick:
`domain.causation.causes`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg
import msgspec
import structlog

from sdv_events.bus import (
    Conflict,
    InvalidRequest,
    NotFound,
    Rejected,
    RequestTimeout,
    ServiceUnavailable,
)
from sdv_events.bus.rpc import command_error
from sdv_events.commands import (
    Accepted,
    StateCache,
    handle_command,
    load,
    raise_if_refused,
    recorded_outcome,
)
from sdv_events.envelope import Metadata
from sdv_events.errors import DomainError
from sdv_events.idempotency import IdempotencyKey
from sdv_events.ids import split_stream_id, stream_id, uuid7
from sdv_events.registry import short_name
from sdv_events.schedules import check_schedule
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    MAX_PAGE,
    CreateRolloutRequest,
    RolloutSummary,
    RolloutView,
    Target,
)
from sdv_events.schemas.scheduling import Schedule
from sdv_events.store import EventStore
from sdv_orchestrator.adapters.peers import Peers
from sdv_orchestrator.adapters.reservations import Reservations
from sdv_orchestrator.adapters.rollouts_view import TERMINAL, RolloutsView
from sdv_orchestrator.domain.activation import ActivateDevices
from sdv_orchestrator.domain.causation import causes
from sdv_orchestrator.domain.plan_events import distinct_packages
from sdv_orchestrator.domain.planning import eligible, package_arches
from sdv_orchestrator.domain.rollout import RolloutState, rollout_decider
from sdv_orchestrator.domain.rollout_commands import (
    CancelRollout,
    CreateRollout,
    PauseRollout,
    Report,
    ReportDevices,
    ResumeRollout,
    RollbackRollout,
    RolloutCommand,
    StartRollout,
    Tick,
)
from sdv_orchestrator.domain.rollout_view import view_of, waiting_of
from sdv_orchestrator.projections import DesiredStates, Presence
from sdv_orchestrator.rollout_traces import RolloutTraces

log = structlog.get_logger("sdv.orchestrator")
SYSTEM = "system"  # the actor of what devices' reports and the ticker decide
# Before this a deadline is never due: the time facts have been handled up to, when unknown.
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")
# The events that end a rollout's hold on its devices (its status becomes one of TERMINAL).
RELEASING = frozenset({"RolloutCompleted", "RolloutAborted", "RolloutCancelled", "RollbackStarted"})


def utc_now() -> datetime:
    return datetime.now(UTC)


def rollout_stream(rollout_id: str) -> str:
    return stream_id("rollout", rollout_id)


async def ask(service: str, call: Awaitable[T], *, nothing_done: str) -> T:
    """A peer's answer; when the peer does not answer, an error that names it and says what
    was not done (the caller's own `unavailable` would otherwise blame the orchestrator)."""
    try:
        return await call
    except (ServiceUnavailable, RequestTimeout) as err:
        raise type(err)(f"the {service} did not answer ({err.message}); {nothing_done}",
                        details={**err.details, "service": service}) from None


@dataclass
class Orchestrator:
    store: EventStore
    peers: Peers
    desired: DesiredStates
    clock: Callable[[], datetime] = utc_now
    cache: StateCache = field(default_factory=StateCache)
    # Devices' presence as the registry last said (None: judged by what was known at planning).
    presence: Presence | None = None
    # Clock skew allowed between a device's fact and a deadline (SDV_ORCHESTRATOR_CLOCK_SKEW_S).
    tolerance_s: float = 5.0
    traces: RolloutTraces = field(init=False)
    reservations: Reservations = field(init=False)
    rollouts: RolloutsView = field(init=False)

    def __post_init__(self) -> None:
        self.traces = RolloutTraces(self.store)
        self.reservations = Reservations(self.store.schema)
        self.rollouts = RolloutsView(self.store.schema)

    @property
    def schema(self) -> str:
        return self.store.schema

    async def run(self, rollout_id: str, command: RolloutCommand, *, metadata: Metadata = Metadata(),
                  key: IdempotencyKey | None = None) -> Accepted:
        stream = rollout_stream(rollout_id)
        accepted = raise_if_refused(await handle_command(
            self.store, rollout_decider, stream, command,
            key=key, metadata=await self.traces.metadata(stream, metadata), cache=self.cache,
            causes=causes,
        ))
        if any(short_name(t) in RELEASING for t in accepted.event_types):
            await self._release_ended(rollout_id)
        return accepted

    async def _release_ended(self, rollout_id: str) -> None:
        """The rollout ended: its devices are free for the next one. Rows a crash or a failure
        here leaves block nothing: the next start that meets them asks the store (`_reserve`),
        so the command's outcome (stored) is not turned into an error."""
        try:
            await self.reservations.release(self.store.pool, [rollout_id])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("reservations_not_released", rollout_id=rollout_id,
                        error_type=type(err).__name__, error=str(err))

    async def state(self, rollout_id: str) -> RolloutState:
        # `load` takes the stream's lock with the cache (see sdv_events.commands.load).
        state, _ = await load(self.store, rollout_decider, rollout_stream(rollout_id), self.cache)
        if state.status == "none":
            raise NotFound(f"no rollout {rollout_id}")
        return state

    async def state_or_none(self, rollout_id: str) -> RolloutState | None:
        try:
            return await self.state(rollout_id)
        except NotFound:
            return None

    async def create(self, req: CreateRolloutRequest, *, metadata: Metadata = Metadata(),
                     key: IdempotencyKey | None = None) -> RolloutView:
        if key is not None:
            first = await recorded_outcome(self.store, key)
            if isinstance(first, Accepted):  # a retry: the first attempt's rollout, not a new one
                rollout_id = split_stream_id(first.stream_id)[1]
                return await (self.start(rollout_id, metadata=metadata) if req.start
                              else self.get(rollout_id))
        try:  # before asking anyone: a schedule that cannot run is the caller's to fix
            check_schedule(req.schedule)
        except DomainError as refused:
            raise command_error(refused.code, refused.message) from None
        nothing = "nothing was stored: retry the create"
        view = await ask("packager", self.peers.package(req.package, req.version),
                         nothing_done=nothing)
        if view.yanked:
            raise Rejected(f"{req.package} {req.version} is yanked ({view.yank_reason}); "
                           "it cannot be rolled out")
        rollout_id = req.rollout_id or str(uuid.uuid4())
        command = CreateRollout(
            rollout_id=rollout_id, package=view.info, target=req.target, strategy=req.strategy,
            thresholds=req.thresholds, timeouts=req.timeouts, auto_rollback=req.auto_rollback,
            offline=req.offline, schedule=req.schedule, now=self.clock(),
            actor=metadata.actor or "",
        )
        existing = await self.state_or_none(rollout_id) if req.start else None
        if not req.start or (existing is not None and existing.status != "created"):
            # Created only, or asked for again once started (a policy's event redelivered):
            # the decider says whether it is the same rollout (nothing to do) or a conflict.
            await self.run(rollout_id, command, metadata=metadata, key=key)
            return await self.get(rollout_id)
        plan = await self._plan(rollout_id, view.info, req.target, req.schedule,
                                nothing_done=nothing)
        command = msgspec.structs.replace(command, plan=plan)
        await self._run_releasing(rollout_id, command, metadata, key)
        return await self.get(rollout_id)

    async def start(self, rollout_id: str, *, metadata: Metadata = Metadata()) -> RolloutView:
        state = await self.state(rollout_id)
        if state.status != "created":
            return await self.get(rollout_id)
        assert state.created is not None
        plan = await self._plan(rollout_id, state.created.package, state.created.target,
                                state.created.schedule,
                                nothing_done="the rollout was not started: retry the start")
        await self._run_releasing(rollout_id, plan, metadata, None)
        return await self.get(rollout_id)

    async def _plan(self, rollout_id: str, package: PackageInfo, target: Target,
                    schedule: Schedule, *, nothing_done: str) -> StartRollout:
        """What starting needs, from the registry (devices, capabilities, presence, labels for
        label windows, signal catalogues when the package declares signals) and the read
        models; reserves the eligible devices (released if the start is not stored)."""
        devices, unknown = await ask(
            "registry",
            self.peers.devices(target, signals=bool(package.vss_reads or package.vss_writes)),
            nothing_done=nothing_done)
        ok, excluded = eligible(package, devices, package_arches(package))
        excluded |= unknown
        async with self.store.pool.acquire() as conn, conn.transaction():
            ok = await self._reserve(conn, rollout_id, package.name, ok)
            current = await self.desired.view.current_many(conn, ok, package.name)
        packages, previous = distinct_packages(
            current, lambda raw: msgspec.json.decode(raw, type=PackageInfo))
        chosen = set(ok)
        offline = sorted(d.device_id for d in devices if not d.online and d.device_id in chosen)
        labels = ({d.device_id: dict(d.labels) for d in devices if d.labels and d.device_id in chosen}
                  if schedule.label_windows else {})
        return StartRollout(device_ids=ok, excluded=excluded, previous_packages=packages,
                            previous=previous, offline=offline, labels=labels, now=self.clock())

    async def _run_releasing(self, rollout_id: str, command: CreateRollout | StartRollout,
                             metadata: Metadata, key: IdempotencyKey | None) -> None:
        try:
            await self.run(rollout_id, command, metadata=metadata, key=key)
        except BaseException:
            await self.reservations.release(self.store.pool, [rollout_id])
            raise
        plan = command if isinstance(command, StartRollout) else command.plan
        if plan is not None:
            log.info("rollout_started", rollout_id=rollout_id, devices=len(plan.device_ids),
                     excluded=len(plan.excluded), offline=len(plan.offline),
                     upgrading=len(plan.previous), previous_versions=len(plan.previous_packages))

    async def _reserve(self, conn: asyncpg.Connection, rollout_id: str, app: str,
                       devices: list[str]) -> list[str]:
        await self.reservations.lock_app(conn, app)
        busy = await self.reservations.held_by_others(conn, rollout_id, app, devices)
        # An ended rollout's reservations are released once its end is appended; a crash in
        # between leaves them, and the event store knows it ended. Such a rollout blocks nothing.
        ended = [rid for rid in {rid for _, rid in busy}
                 if (s := await self.state_or_none(rid)) is not None and s.status in TERMINAL]
        if ended:
            await self.reservations.release(conn, ended)
            busy = [(d, rid) for d, rid in busy if rid not in ended]
        if busy:
            named = ", ".join(f"{d} ({rid})" for d, rid in busy[:10])
            raise Conflict(
                f"{len(busy)} device(s) are in another active rollout of {app}: {named}",
                details=dict(busy[:100]),
            )
        await self.reservations.reserve(conn, rollout_id, app, devices)
        return devices

    async def pause(self, rollout_id: str, reason: str = "", **kw: object) -> RolloutView:
        await self.run(rollout_id, PauseRollout(self.clock(), reason), **kw)  # type: ignore[arg-type]
        return await self.get(rollout_id)

    async def resume(self, rollout_id: str, **kw: object) -> RolloutView:
        await self.run(rollout_id, ResumeRollout(self.clock()), **kw)  # type: ignore[arg-type]
        return await self.get(rollout_id)

    async def cancel(self, rollout_id: str, reason: str = "", **kw: object) -> RolloutView:
        await self.run(rollout_id, CancelRollout(self.clock(), reason or "cancelled by operator"),
                       **kw)  # type: ignore[arg-type]
        return await self.get(rollout_id)

    async def rollback(self, rollout_id: str, reason: str = "", **kw: object) -> RolloutView:
        await self.run(rollout_id, RollbackRollout(self.clock(), reason or "rolled back by operator"),
                       **kw)  # type: ignore[arg-type]
        return await self.get(rollout_id)

    async def activate(self, rollout_id: str, device_ids: list[str], *,
                       metadata: Metadata = Metadata()) -> RolloutView:
        """Release the hold of these devices (none: every targeted one): new desired documents
        without the hold (domain/activation.py says what is refused)."""
        await self.state(rollout_id)  # an unknown rollout: NotFound naming it
        await self.run(rollout_id, ActivateDevices(device_ids=device_ids, now=self.clock(),
                                                   actor=metadata.actor or ""), metadata=metadata)
        return await self.get(rollout_id)

    async def report(self, rollout_id: str, reports: list[Report]) -> None:
        """Device outcomes from agents' facts; duplicates, strangers and facts about another
        version are ignored by the decider. Each outcome is caused by its fact."""
        await self.run(rollout_id, ReportDevices(reports, self.clock(), self.tolerance_s),
                       metadata=Metadata(actor=SYSTEM))

    async def tick(self, rollout_id: str, facts_until: datetime | None) -> None:
        """Timeouts, offline devices and soak times. `facts_until`: every device fact published
        before it has been handled (None: unknown, so no deadline is judged)."""
        until = facts_until or NEVER
        now = self.clock()
        state = await self.state(rollout_id)
        due = min(now, until) - timedelta(seconds=self.tolerance_s)
        # Whose presence matters now: devices past their deadline, and those waited for.
        asked = [d for d, (_, status, deadline) in state.devices.items()
                 if status == "waiting_offline"
                 or (deadline is not None and deadline <= due and status in _JUDGED)]
        presence = await self.presence.of(asked) if asked and self.presence is not None else {}
        await self.run(rollout_id, Tick(now=now, facts_until=until, presence=presence,
                                        tolerance_s=self.tolerance_s),
                       metadata=Metadata(causation_id=f"tick:{uuid7()}", actor=SYSTEM))

    async def active(self) -> list[str]:
        """Rollouts the ticker looks after: running or paused, or following a rollback."""
        return await self.rollouts.active(self.store.pool)

    async def get(self, rollout_id: str, offset: int = 0, limit: int = 1000) -> RolloutView:
        """One page of the view: rows [offset, offset + limit) of waves, devices and excluded
        (`limit` at most MAX_PAGE), so a reply stays small whatever the fleet."""
        if offset < 0 or not 0 < limit <= MAX_PAGE:
            raise InvalidRequest(f"offset must be >= 0 and limit in [1, {MAX_PAGE}]")
        return view_of(rollout_id, await self.state(rollout_id), offset, limit, now=self.clock())

    async def list(self, app: str | None, status: str | None, limit: int) -> list[RolloutSummary]:
        rows = await self.rollouts.list(self.store.pool, app, status, limit)
        return [await self._summary(r) for r in rows]

    async def _summary(self, r: asyncpg.Record) -> RolloutSummary:
        """A catalog row; an active rollout's waiting and deferred devices from its state (kept
        hot by the ticker), which the catalog does not follow device by device."""
        summary = RolloutSummary(
            rollout_id=r["rollout_id"], app=r["app"], version=r["version"], status=r["status"],
            devices=r["devices"], succeeded=r["succeeded"], failed=r["failed"],
            created_at=r["created_at"], updated_at=r["updated_at"],
            schedule=Schedule() if r["schedule"] is None
            else msgspec.json.decode(r["schedule"], type=Schedule))
        if r["status"] not in ("running", "paused") or not _live(summary.schedule):
            return summary
        state = await self.state_or_none(summary.rollout_id)
        if state is None:
            return summary
        statuses = [status for _, status, _ in state.devices.values()]
        waiting = waiting_of(state, self.clock())
        return msgspec.structs.replace(
            summary, waiting=waiting, status="waiting" if waiting is not None else summary.status,
            staged=sum(s in ("staged", "deferred") for s in statuses),
            deferred=statuses.count("deferred"))


_JUDGED = ("targeted", "rolling_back", "staged", "deferred")  # at their deadline: online or not?


def _live(schedule: Schedule) -> bool:
    """Whether a rollout's list row needs its state: it may wait, or defer devices."""
    return schedule != Schedule(pacing=schedule.pacing) or schedule.pacing.limited
