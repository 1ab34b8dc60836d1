"""The rollout aggregate (stream `rollout-<id>`): create (+ start: plan frozen) → waves →
completed, or aborted (+ automatic rollback), paused/resumed, cancelled, rolled back by hand.

Rules, in decide():
- a device is targeted at most once per rollout; reports from devices not targeted, already
  counted, or about another version change nothing (agents may repeat themselves);
- time is judged by when things happened: a report counts by its fact's occurrence time
  against the device's deadline, give or take `tolerance_s` of clock skew (a fact that
  happened later is a timeout, however early it arrives); a device is timed out only once
  every fact that could still count has been handled (`Tick.facts_until`, the time up to which
  the facts consumer has caught up), so an outage of the orchestrator, its database or the bus
  never turns a success into a timeout;
- a device offline (by the registry's heartbeats) at its deadline is skipped, waited for or
  failed, as the rollout's `offline` option says; offline devices are planned after online ones;
- once a wave's failures (failed + timed out) exceed `thresholds.error` of the devices counted
  (skipped ones are not), the rollout aborts in the same decision — at the outcome that crossed
  it, never later, never silently;
- a wave completes when every device has an outcome and at least `thresholds.success` of the
  counted ones succeeded; the next wave starts after `timeouts.soak_s` (on a later Tick) unless
  the rollout is paused; a paused rollout still counts reports and still aborts, but starts
  nothing new;
- after a rollback every touched device is followed until it reports its previous version (or
  the app removed when it had none) or its rollback deadline passes; then `RollbackCompleted`;
- a started wave's devices are targeted as the schedule allows (domain/targeting.py: start
  time, maintenance windows, rate, max in flight), on later ticks and reports too; a rollout
  that may target nobody for a while says so once (`RolloutWaiting`);
- a device that staged the version (downloaded, verified) and waits to switch is judged by its
  activation deadline, not the device timeout (domain/deferral.py); an operator releases held
  devices (domain/activation.py).
Time comes in on the commands (domain/rollout_commands.py: `now`); `evolve` updates the state
in place for speed (a 10,000 device rollout folds tens of thousands of events), so the
decider's initial state is a factory.
No event grows with the fleet: the plan is a header and bounded chunks (domain/plan_events.py),
and a rollback names no device (each goes back to the previous package its plan recorded).
A rollout planned with version 1 events (devices inline) folds through the same path and is
rolled back with a version 1 `RollbackStartedV1`, which read models built then understand.
What caused each event of a decision: domain/causation.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sdv_events.decider import Decider
from sdv_events.errors import DomainError
from sdv_events.schedules import check_schedule
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceBackOnline,
    DeviceFailed,
    DeviceOffline,
    DeviceRollbackUnconfirmed,
    DeviceRolledBack,
    DevicesExcluded,
    DevicesOffline,
    DevicesPlanned,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    OfflineOutcome,
    PreviousAssignment,
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
    WaveCompleted,
    WaveStarted,
)
from sdv_events.schemas.scheduling import (
    ActivationRequested,
    DeviceDeferred,
    DeviceStaged,
    DevicesWindowed,
    RolloutWaiting,
)
from sdv_orchestrator.domain import targeting
from sdv_orchestrator.domain.activation import ActivateDevices, decide_activation
from sdv_orchestrator.domain.deferral import STAGED, StagingBatch, not_activated
from sdv_orchestrator.domain.plan_events import expand_v1, plan_events
from sdv_orchestrator.domain.planning import plan_waves
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
from sdv_orchestrator.domain.targeting import Targeting, WaveQueue

Status = Literal["none", "created", "running", "paused", "completed", "aborted", "cancelled",
                 "rolled_back"]
DeviceStatus = Literal["targeted", "waiting_offline", "staged", "deferred", "succeeded",
                       "already_current", "failed", "timed_out", "skipped_offline", "rolling_back",
                       "rolled_back", "rollback_unconfirmed"]
PENDING: frozenset[str] = frozenset({"targeted", "waiting_offline"})
UNDECIDED: frozenset[str] = PENDING | STAGED  # targeted, no outcome yet (in flight)
ALREADY_CURRENT = "already_current"
RolloutEvent = (
    RolloutCreated | RolloutPlanned | PreviousPackages | DevicesPlanned | DevicesOffline
    | DevicesExcluded | WaveStarted | DeviceTargeted | DeviceSucceeded | DeviceFailed
    | DeviceTimedOut | DeviceOffline | DeviceBackOnline | WaveCompleted | RolloutPaused
    | RolloutResumed | RolloutAborted | RollbackStarted | DeviceRolledBack
    | DeviceRollbackUnconfirmed | RollbackCompleted | RolloutCompleted | RolloutCancelled
    | RolloutPlannedV1 | RollbackStartedV1 | RolloutWaiting | DevicesWindowed | DeviceStaged
    | DeviceDeferred | ActivationRequested
)
_OFFLINE_OUTCOME: dict[str, OfflineOutcome] = {"skip": "skipped", "wait": "waiting", "fail": "failed"}
_DUE: frozenset[str] = frozenset({"targeted"}) | STAGED  # judged at their deadline on a tick


# --- state --------------------------------------------------------------------------------------
@dataclass
class WaveCount:
    size: int
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    targeted: int = 0

    @property
    def pending(self) -> int:
        return self.size - self.succeeded - self.failed - self.skipped


@dataclass
class RolloutState:
    status: Status = "none"
    created: RolloutCreated | None = None
    waves: list[list[str]] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    previous_packages: list[PackageInfo] = field(default_factory=list)
    previous: dict[str, int] = field(default_factory=dict)  # device → index in previous_packages
    planned_v1: bool = False  # planned with version 1 events: rolled back with version 1
    current_wave: int = -1
    wave_completed_at: datetime | None = None
    counts: list[WaveCount] = field(default_factory=list)
    # device → (wave, status, deadline); the deadline is None while waiting for it offline.
    devices: dict[str, tuple[int, DeviceStatus, datetime | None]] = field(default_factory=dict)
    # Devices without an outcome yet that are known offline (when planned, or at their
    # deadline), with their wave: "waiting: offline".
    offline: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # device → why (failed, rolled back)
    already_current: int = 0
    paused_at: datetime | None = None
    rolled_back: bool = False
    rollback_open: bool = False  # rolled back, devices still being followed
    rolling_back: int = 0  # devices not yet accounted for by the rollback
    rollback_ok: int = 0
    rollback_unconfirmed: int = 0
    reason: str = ""  # why it was aborted, cancelled or rolled back
    targeting: Targeting = field(default_factory=Targeting)
    # Devices that staged the version: their last deferral (None: none reported).
    deferrals: dict[str, DeviceDeferred | None] = field(default_factory=dict)
    activated: set[str] = field(default_factory=set)  # devices whose hold was released

    @property
    def active(self) -> bool:
        return self.status in ("running", "paused")

    def previous_package(self, device_id: str) -> PackageInfo | None:
        ref = self.previous.get(device_id)
        return None if ref is None else self.previous_packages[ref]


def _invalid(message: str) -> DomainError:
    return DomainError(message, code="invalid_request")


# --- decide -------------------------------------------------------------------------------------
def decide(command: RolloutCommand, state: RolloutState) -> Sequence[RolloutEvent]:
    match command:
        case CreateRollout(plan=plan):
            created = _create(command, state)
            if plan is None:
                return created
            if not created:
                return _start(plan, state)  # a retry: start it if it is still only created
            fresh = evolve(RolloutState(), created[0])
            return [*created, *_start(plan, fresh)]
        case StartRollout():
            return _start(command, state)
        case ReportDevices(reports=reports, now=now, tolerance_s=tolerance):
            return _report(state, reports, now, tolerance)
        case Tick():
            return _tick(state, command)
        case PauseRollout(now=now, reason=reason):
            if state.status == "paused":
                return []
            _require(state, ("running",), "pause")
            return [RolloutPaused(now, reason)]
        case ResumeRollout(now=now):
            if state.status == "running":
                return []
            _require(state, ("paused",), "resume")
            assert state.paused_at is not None
            resumed = RolloutResumed(now, (now - state.paused_at).total_seconds())
            return [resumed, *_progress(state, now, _Tally.of(state), resuming=True)]
        case CancelRollout(now=now, reason=reason):
            if state.status == "cancelled":
                return []
            _require(state, ("created", "running", "paused"), "cancel")
            return [RolloutCancelled(reason, now)]
        case ActivateDevices():
            _require(state, ("created", "running", "paused", "completed", "aborted", "cancelled",
                             "rolled_back"), "activate")
            assert state.created is not None
            return decide_activation(command, status=state.status, created=state.created,
                                     devices=state.devices, planned_wave=_planned_wave(state),
                                     activated=state.activated, waiting=UNDECIDED)
        case RollbackRollout(now=now, reason=reason):
            if state.rolled_back:
                return []
            _require(state, ("running", "paused", "completed", "aborted", "cancelled"), "roll back")
            events: list[RolloutEvent] = []
            if state.active:
                events.append(RolloutAborted(reason, state.current_wave, now))
            return [*events, _rollback(state, reason, now)]
    raise _invalid(f"unknown command {type(command).__name__}")


def _require(state: RolloutState, allowed: tuple[str, ...], action: str) -> None:
    if state.status == "none":
        raise DomainError("no such rollout", code="not_found")
    if state.status not in allowed:
        raise DomainError(f"cannot {action} a rollout that is {state.status}", code="conflict")


def _create(cmd: CreateRollout, state: RolloutState) -> list[RolloutEvent]:
    if state.status != "none":
        if state.created is not None and state.created.package == cmd.package \
                and state.created.target == cmd.target:
            return []
        raise DomainError(f"rollout {cmd.rollout_id} already exists", code="conflict")
    t, o = cmd.thresholds, cmd.timeouts
    if not 0 < t.success <= 1 or not 0 <= t.error < 1:
        raise _invalid("thresholds: success must be in (0, 1] and error in [0, 1)")
    if o.device_s <= 0 or o.soak_s < 0:
        raise _invalid("timeouts: device_s must be > 0 and soak_s >= 0")
    if bool(cmd.target.selector) == bool(cmd.target.device_ids):
        raise _invalid("target: give either a selector or a list of device ids")
    if cmd.offline not in _OFFLINE_OUTCOME:
        raise _invalid("offline: skip, wait or fail")
    plan_waves(["probe"], cmd.strategy)  # validates the strategy
    check_schedule(cmd.schedule)
    return [RolloutCreated(
        rollout_id=cmd.rollout_id, package=cmd.package, target=cmd.target, strategy=cmd.strategy,
        thresholds=t, timeouts=o, auto_rollback=cmd.auto_rollback, created_at=cmd.now,
        created_by=cmd.actor, offline=cmd.offline, schedule=cmd.schedule,
    )]


def _start(cmd: StartRollout, state: RolloutState) -> Sequence[RolloutEvent]:
    if state.status in ("running", "paused", "completed", "aborted", "rolled_back"):
        return []  # already started: starting twice is harmless
    _require(state, ("created",), "start")
    assert state.created is not None
    away = set(cmd.offline)
    # Offline devices last: the first waves judge the package on devices that can answer.
    ordered = [d for d in cmd.device_ids if d not in away] + [d for d in cmd.device_ids if d in away]
    waves = plan_waves(ordered, state.created.strategy)
    if not waves:
        raise DomainError(
            f"no eligible device for the target ({len(cmd.excluded)} excluded)", code="no_devices"
        )
    if any(not 0 <= i < len(cmd.previous_packages) for i in cmd.previous.values()):
        raise _invalid("previous: a device points outside previous_packages")
    offline = [d for d in ordered if d in away]
    windowed = targeting.windowed_devices(state.created.schedule, ordered, cmd.labels)
    plan = plan_events(waves, cmd.excluded, cmd.previous, cmd.previous_packages, cmd.now, offline,
                       windowed)
    fresh = Targeting(state.created.schedule, groups={w.device_id: w.labels for w in windowed})
    return [*plan, *_start_wave(state.created, fresh, 0, waves[0], cmd.now)]


def _start_wave(created: RolloutCreated, t: Targeting, index: int, wave: list[str],
                now: datetime) -> list[RolloutEvent]:
    """The wave starts; its devices are targeted as the schedule allows (some now, or none)."""
    queue = WaveQueue.of(wave, t.groups, ())
    return [WaveStarted(index, len(wave), now),
            *targeting.target(t, queue, index, 0, created.timeouts.device_s, now)]


def _target_more(state: RolloutState, tally: _Tally, now: datetime) -> list[RolloutEvent]:
    """More of the current wave's devices, as the schedule allows now (`tally`: its outcomes,
    this decision's included, so devices that just reported are no longer in flight)."""
    assert state.created is not None
    index = state.current_wave
    if index < 0 or state.wave_completed_at is not None:
        return []
    in_flight = state.counts[index].targeted - tally.decided
    return [*targeting.target(state.targeting, state.targeting.queue, index, in_flight,
                              state.created.timeouts.device_s, now)]


def _planned_wave(state: RolloutState) -> Callable[[str], int | None]:
    waves: dict[str, int] = {}

    def wave_of(device_id: str) -> int | None:
        if not waves:
            waves.update((d, i) for i, wave in enumerate(state.waves) for d in wave)
        return waves.get(device_id)

    return wave_of


@dataclass
class _Tally:
    """The current wave's counts, with the outcomes decided so far in this decision."""

    index: int
    size: int
    succeeded: int
    failed: int
    skipped: int

    @classmethod
    def of(cls, state: RolloutState) -> _Tally:
        c = state.counts[state.current_wave]
        return cls(state.current_wave, c.size, c.succeeded, c.failed, c.skipped)

    def count(self, event: RolloutEvent, wave: int) -> None:
        if wave != self.index:
            return
        match event:
            case DeviceSucceeded():
                self.succeeded += 1
            case DeviceFailed() | DeviceTimedOut() | DeviceOffline(outcome="failed"):
                self.failed += 1
            case DeviceOffline(outcome="skipped"):
                self.skipped += 1

    @property
    def counted(self) -> int:
        return self.size - self.skipped

    @property
    def decided(self) -> int:
        return self.succeeded + self.failed + self.skipped


def _report(state: RolloutState, reports: Sequence[Report], now: datetime,
            tolerance_s: float) -> Sequence[RolloutEvent]:
    if state.rollback_open:
        return _report_rollback(state, reports, now)
    if not state.active:
        return []  # late reports after the end change nothing
    assert state.created is not None
    created = state.created
    digest = created.package.digest
    slack = timedelta(seconds=tolerance_s)
    tally = _Tally.of(state)
    events: list[RolloutEvent] = []
    seen: set[str] = set()
    batch = StagingBatch(created, state.devices, state.deferrals, slack, now)
    for report in reports:
        device_id = report.device_id
        entry = batch.entry(device_id)
        if entry is None or entry[1] not in UNDECIDED or device_id in seen:
            continue
        if (report.digest or digest) != digest or report.kind == "uninstalled":
            continue  # about another version (the one it ran before, say)
        wave, _, deadline = entry
        if report.kind in ("staged", "deferred"):
            found = batch.stage(device_id, entry, report)
            events += found
            if found and isinstance(found[0], DeviceTimedOut):  # it staged too late
                seen.add(device_id)
                tally.count(found[0], wave)
                if abort := _abort_if_over(state, tally, now):
                    return [*events, *abort]
            continue
        seen.add(device_id)
        outcome: RolloutEvent
        if deadline is not None and report.observed_at is not None \
                and report.observed_at > deadline + slack:
            outcome = batch.late(device_id, entry, report)
        elif report.ok:
            outcome = DeviceSucceeded(device_id, wave, report.fact_id, report.observed_at,
                                      ALREADY_CURRENT if report.kind == ALREADY_CURRENT else "")
        else:
            outcome = DeviceFailed(device_id, wave, report.reason or "failed", report.fact_id,
                                   report.observed_at)
        events.append(outcome)
        tally.count(outcome, wave)
        if abort := _abort_if_over(state, tally, now):
            return [*events, *abort]
    return [*events, *_progress(state, now, tally)]


def _tick(state: RolloutState, tick: Tick) -> Sequence[RolloutEvent]:
    now = tick.now
    judged = min(now, tick.facts_until or now) - timedelta(seconds=tick.tolerance_s)

    def offline(device_id: str) -> bool:
        return not tick.presence.get(device_id, device_id not in state.offline)

    if state.rollback_open:
        return _tick_rollback(state, judged, offline, now)
    if state.status != "running":
        return []
    created = state.created
    assert created is not None
    tally = _Tally.of(state)
    events: list[RolloutEvent] = []
    for device_id, (wave, status, deadline) in state.devices.items():
        if status in _DUE and deadline is not None and deadline <= judged:
            outcome: RolloutEvent
            if offline(device_id):
                outcome = DeviceOffline(device_id, wave, _OFFLINE_OUTCOME[created.offline], now)
            elif status == "targeted":
                outcome = DeviceTimedOut(device_id, wave)
            else:  # staged: its activation deadline
                outcome = DeviceFailed(device_id, wave,
                                       not_activated(created, state.deferrals.get(device_id)))
            events.append(outcome)
            tally.count(outcome, wave)
            if abort := _abort_if_over(state, tally, now):
                return [*events, *abort]
        elif status == "waiting_offline" and not offline(device_id):
            # A device that had staged waits to switch again: its activation deadline anew.
            wait_s = (created.schedule.activation_timeout_s
                      if device_id in state.deferrals and created.schedule.defers
                      else created.timeouts.device_s)
            events.append(DeviceBackOnline(device_id, wave, now + timedelta(seconds=wait_s)))
    return [*events, *_progress(state, now, tally)]


def _abort_if_over(state: RolloutState, tally: _Tally, now: datetime) -> list[RolloutEvent]:
    """Abort (and roll back) once the wave's failures exceed the error threshold."""
    created = state.created
    assert created is not None
    if tally.counted <= 0 or tally.failed / tally.counted <= created.thresholds.error:
        return []
    reason = (f"wave {tally.index + 1}: {tally.failed} of {tally.counted} devices failed, more "
              f"than the {created.thresholds.error:.0%} error threshold")
    return _abort(state, reason, now)


def _abort(state: RolloutState, reason: str, now: datetime) -> list[RolloutEvent]:
    assert state.created is not None
    events: list[RolloutEvent] = [RolloutAborted(reason, state.current_wave, now)]
    return [*events, _rollback(state, reason, now)] if state.created.auto_rollback else events


def _progress(state: RolloutState, now: datetime, tally: _Tally,
              resuming: bool = False) -> list[RolloutEvent]:
    """The wave's thresholds, then (the wave still going, the rollout not paused) more devices."""
    events = _advance(state, now, tally, resuming)
    if events or not (state.status == "running" or resuming):
        return events
    return _target_more(state, tally, now)


def _advance(state: RolloutState, now: datetime, tally: _Tally,
             resuming: bool = False) -> list[RolloutEvent]:
    """Thresholds of the current wave as `tally` counts it (this decision's outcomes included)."""
    created = state.created
    assert created is not None
    if abort := _abort_if_over(state, tally, now):
        return abort
    index = state.current_wave
    t = created.thresholds
    if state.wave_completed_at is None:
        if tally.decided < tally.size:
            return []
        if tally.counted > 0 and tally.succeeded / tally.counted < t.success:
            return _abort(state, f"wave {index + 1}: {tally.succeeded} of {tally.counted} devices "
                                 f"succeeded, less than the {t.success:.0%} success threshold", now)
        completed = WaveCompleted(index, tally.succeeded, tally.failed, now, tally.skipped)
        if index == len(state.waves) - 1:
            earlier = state.counts[:index]
            return [completed, RolloutCompleted(
                sum(c.succeeded for c in earlier) + tally.succeeded,
                sum(c.failed for c in earlier) + tally.failed, now,
                sum(c.skipped for c in earlier) + tally.skipped)]
        if created.timeouts.soak_s > 0 or (state.status == "paused" and not resuming):
            return [completed]
        return [completed, *_start_wave(created, state.targeting, index + 1,
                                        state.waves[index + 1], now)]
    soak_until = state.wave_completed_at + timedelta(seconds=created.timeouts.soak_s)
    if now >= soak_until and (state.status == "running" or resuming):
        return _start_wave(created, state.targeting, index + 1, state.waves[index + 1], now)
    return []


def _rollback(state: RolloutState, reason: str, now: datetime) -> RollbackStarted | RollbackStartedV1:
    if not state.planned_v1:
        return RollbackStarted(reason, now, len(state.devices))
    # Read models that applied a version 1 plan recorded no previous packages: name them.
    packages = state.previous_packages
    return RollbackStartedV1([
        PreviousAssignment(d, None if (ref := state.previous.get(d)) is None else packages[ref])
        for d in sorted(state.devices)
    ], reason, now)


def _report_rollback(state: RolloutState, reports: Sequence[Report],
                     now: datetime) -> Sequence[RolloutEvent]:
    """After a rollback: a device is back when it reports its previous version (healthy, or
    already running it), or the app uninstalled when it had none before."""
    assert state.created is not None
    events: list[RolloutEvent] = []
    seen: set[str] = set()
    for report in reports:
        device_id = report.device_id
        entry = state.devices.get(device_id)
        if entry is None or entry[1] != "rolling_back" or device_id in seen:
            continue
        previous = state.previous_package(device_id)
        wave = entry[0]
        outcome: RolloutEvent
        if previous is not None and report.digest == previous.digest and report.kind != "uninstalled":
            outcome = (DeviceRolledBack(device_id, wave, report.fact_id, report.observed_at)
                       if report.ok else DeviceRollbackUnconfirmed(
                           device_id, wave, f"its previous version failed: {report.reason}",
                           report.fact_id, report.observed_at))
        elif previous is None and report.kind == "uninstalled" \
                and (report.digest or state.created.package.digest) == state.created.package.digest:
            outcome = DeviceRolledBack(device_id, wave, report.fact_id, report.observed_at)
        else:
            continue
        seen.add(device_id)
        events.append(outcome)
    return [*events, *_rollback_done(state, events, now)]


def _tick_rollback(state: RolloutState, judged: datetime, offline: Callable[[str], bool],
                   now: datetime) -> Sequence[RolloutEvent]:
    events: list[RolloutEvent] = [
        DeviceRollbackUnconfirmed(
            device_id, wave, "offline at its rollback deadline" if offline(device_id)
            else "no report of its previous version by its rollback deadline")
        for device_id, (wave, status, deadline) in state.devices.items()
        if status == "rolling_back" and deadline is not None and deadline <= judged
    ]
    return [*events, *_rollback_done(state, events, now)]


def _rollback_done(state: RolloutState, outcomes: Sequence[RolloutEvent],
                   now: datetime) -> list[RolloutEvent]:
    if not outcomes or len(outcomes) < state.rolling_back:
        return []
    ok = state.rollback_ok + sum(isinstance(e, DeviceRolledBack) for e in outcomes)
    return [RollbackCompleted(ok, state.rollback_ok + state.rollback_unconfirmed
                              + len(outcomes) - ok, now)]


# --- evolve (in place: see the module docstring) ------------------------------------------------
def _settle(state: RolloutState, device_id: str, wave: int, status: DeviceStatus,
            reason: str | None = None) -> None:
    state.devices[device_id] = (wave, status, state.devices[device_id][2])
    state.offline.pop(device_id, None)
    if reason is not None:
        state.reasons[device_id] = reason


def evolve(state: RolloutState, event: RolloutEvent) -> RolloutState:
    match event:
        case RolloutCreated(schedule=schedule):
            state.status, state.created = "created", event
            state.targeting = Targeting(schedule)
        case RolloutPlanned(waves=waves):
            state.waves = [[] for _ in range(waves)]
            state.counts = [WaveCount(0) for _ in range(waves)]
            state.status = "running"
        case PreviousPackages(packages=packages):
            state.previous_packages += packages
        case DevicesPlanned(devices=devices):
            for d in devices:
                state.waves[d.wave].append(d.device_id)
                state.counts[d.wave].size += 1
                if d.previous is not None:
                    state.previous[d.device_id] = d.previous
        case DevicesOffline(devices=devices):
            state.offline.update((d.device_id, d.wave) for d in devices)
        case DevicesExcluded(devices=devices):
            state.excluded.update((d.device_id, d.reason) for d in devices)
        case DevicesWindowed(devices=devices):
            state.targeting.groups.update((d.device_id, d.labels) for d in devices)
        case RolloutPlannedV1():
            for planned in expand_v1(event):
                evolve(state, planned)
            state.planned_v1 = True
        case WaveStarted(wave=index):
            state.current_wave, state.wave_completed_at = index, None
            targeting.on_wave_started(state.targeting, state.waves[index], state.devices)
        case DeviceTargeted(device_id=device_id, wave=index, deadline=deadline):
            state.devices[device_id] = (index, "targeted", deadline)
            state.counts[index].targeted += 1
            targeting.on_targeted(state.targeting, event)
        case RolloutWaiting():
            state.targeting.waiting = event
        case DeviceStaged(device_id=device_id, wave=index, deadline=deadline):
            state.devices[device_id] = (index, "staged", deadline)
            state.offline.pop(device_id, None)
            state.deferrals.setdefault(device_id, None)
        case DeviceDeferred(device_id=device_id, wave=index):
            state.devices[device_id] = (index, "deferred", state.devices[device_id][2])
            state.offline.pop(device_id, None)
            state.deferrals[device_id] = event
        case ActivationRequested(device_ids=device_ids, all=everyone):
            state.activated.update(state.devices if everyone else device_ids)
        case DeviceSucceeded(device_id=device_id, wave=index, reason=reason):
            if reason == ALREADY_CURRENT:
                _settle(state, device_id, index, "already_current")
                state.already_current += 1
            else:
                _settle(state, device_id, index, "succeeded")
            state.counts[index].succeeded += 1
        case DeviceFailed(device_id=device_id, wave=index, reason=reason):
            _settle(state, device_id, index, "failed", reason)
            state.counts[index].failed += 1
        case DeviceTimedOut(device_id=device_id, wave=index, observed_at=observed_at):
            _settle(state, device_id, index, "timed_out", None if observed_at is None else
                    f"reported after its deadline (at {observed_at.isoformat()})")
            state.counts[index].failed += 1
        case DeviceOffline(device_id=device_id, wave=index, outcome="waiting"):
            state.devices[device_id] = (index, "waiting_offline", None)
            state.offline[device_id] = index
        case DeviceOffline(device_id=device_id, wave=index, outcome="skipped"):
            _settle(state, device_id, index, "skipped_offline", "offline at its deadline")
            state.counts[index].skipped += 1
        case DeviceOffline(device_id=device_id, wave=index):  # failed
            _settle(state, device_id, index, "failed", "offline at its deadline")
            state.counts[index].failed += 1
        case DeviceBackOnline(device_id=device_id, wave=index, deadline=deadline):
            state.devices[device_id] = (index, _waiting_status(state, device_id), deadline)
            state.offline.pop(device_id, None)
        case WaveCompleted(at=at):
            state.wave_completed_at = at
        case RolloutPaused(at=at):
            state.status, state.paused_at = "paused", at
        case RolloutResumed(paused_for_s=paused_for):
            # Devices get their deadlines back: time spent paused does not count against them.
            shift = timedelta(seconds=paused_for)
            for device_id, (index, status, due) in state.devices.items():
                if status in _DUE and due is not None:
                    state.devices[device_id] = (index, status, due + shift)
            state.status, state.paused_at = "running", None
        case RolloutAborted(reason=reason):
            state.status, state.reason = "aborted", reason
        case RollbackStarted(reason=reason, at=at) | RollbackStartedV1(reason=reason, at=at):
            state.status, state.rolled_back = "rolled_back", True
            state.reason = state.reason or reason
            _follow_rollback(state, at)
        case DeviceRolledBack(device_id=device_id, wave=index):
            state.devices[device_id] = (index, "rolled_back", None)
            state.rolling_back -= 1
            state.rollback_ok += 1
        case DeviceRollbackUnconfirmed(device_id=device_id, wave=index, reason=reason):
            state.devices[device_id] = (index, "rollback_unconfirmed", None)
            state.reasons[device_id] = f"{state.reasons.get(device_id, '')}; {reason}".lstrip("; ")
            state.rolling_back -= 1
            state.rollback_unconfirmed += 1
        case RollbackCompleted():
            state.rollback_open = False
        case RolloutCompleted():
            state.status = "completed"
        case RolloutCancelled(reason=reason):
            state.status, state.reason = "cancelled", reason
    return state


def _waiting_status(state: RolloutState, device_id: str) -> DeviceStatus:
    """A device back online waits for what it waited for before it went away."""
    if device_id not in state.deferrals:
        return "targeted"
    return "staged" if state.deferrals[device_id] is None else "deferred"


def _follow_rollback(state: RolloutState, at: datetime) -> None:
    """Every targeted device goes back: follow each until its previous version reports."""
    assert state.created is not None
    deadline = at + timedelta(seconds=state.created.timeouts.device_s)
    for device_id, (index, status, _) in state.devices.items():
        before = state.reasons.get(device_id)
        state.reasons[device_id] = f"was {status}" + (f": {before}" if before else "")
        state.devices[device_id] = (index, "rolling_back", deadline)
    state.offline.clear()
    state.rolling_back = len(state.devices)
    state.rollback_open = state.rolling_back > 0


rollout_decider: Decider[RolloutCommand, RolloutEvent, RolloutState] = Decider(
    RolloutState, decide, evolve
)
