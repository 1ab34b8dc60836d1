"""The rollout aggregate (stream `rollout-<id>`): create → start (plan frozen) → waves → completed,
or aborted (+ automatic rollback), paused/resumed, cancelled, rolled back by hand.

Rules, in decide():
- a device is targeted at most once per rollout; reports from devices not targeted, or already
  counted, change nothing (agents may repeat themselves);
- once a wave's failures (failed + timed out) exceed `thresholds.error` of the wave, the rollout
  aborts in the same decision — never later, never silently;
- a wave completes when every device reported and at least `thresholds.success` succeeded; the
  next wave starts after `timeouts.soak_s` (on a later Tick) unless the rollout is paused;
- a paused rollout still counts reports and still aborts, but starts nothing new.
Time comes in on the commands (`now`); `evolve` updates the state in place for speed (a 10,000
device rollout folds tens of thousands of events), so the decider's initial state is a factory.
No event grows with the fleet: the plan is a header and bounded chunks (domain/plan_events.py),
and a rollback names no device (each goes back to the previous package its plan recorded).
A rollout planned with version 1 events (devices inline) folds through the same path and is
rolled back with a version 1 `RollbackStartedV1`, which read models built then understand.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from sdv_events.decider import Decider
from sdv_events.errors import DomainError
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceFailed,
    DevicesExcluded,
    DevicesPlanned,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    PreviousAssignment,
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
    Strategy,
    Target,
    Thresholds,
    Timeouts,
    WaveCompleted,
    WaveStarted,
)
from sdv_orchestrator.domain.plan_events import expand_v1, plan_events
from sdv_orchestrator.domain.planning import plan_waves

Status = Literal["none", "created", "running", "paused", "completed", "aborted", "cancelled",
                 "rolled_back"]
DeviceStatus = Literal["targeted", "succeeded", "failed", "timed_out"]
RolloutEvent = (
    RolloutCreated | RolloutPlanned | PreviousPackages | DevicesPlanned | DevicesExcluded
    | WaveStarted | DeviceTargeted | DeviceSucceeded | DeviceFailed | DeviceTimedOut
    | WaveCompleted | RolloutPaused | RolloutResumed | RolloutAborted | RollbackStarted
    | RolloutCompleted | RolloutCancelled | RolloutPlannedV1 | RollbackStartedV1
)


# --- commands -----------------------------------------------------------------------------------
class CreateRollout(msgspec.Struct, frozen=True, kw_only=True):
    rollout_id: str
    package: PackageInfo
    target: Target
    strategy: Strategy = Strategy()
    thresholds: Thresholds = Thresholds()
    timeouts: Timeouts = Timeouts()
    auto_rollback: bool = True
    now: datetime
    actor: str = ""


class StartRollout(msgspec.Struct, frozen=True, kw_only=True):
    device_ids: list[str]  # eligible devices, resolved and filtered by the application
    excluded: dict[str, str] = {}
    previous_packages: list[PackageInfo] = []  # distinct packages the devices run now
    previous: dict[str, int] = {}  # device → index in previous_packages (absent: not installed)
    now: datetime


class Report(msgspec.Struct, frozen=True):
    device_id: str
    ok: bool
    reason: str = ""
    fact_id: uuid.UUID | None = None  # the device's fact reporting it, recorded in the event
    observed_at: datetime | None = None


class ReportDevices(msgspec.Struct, frozen=True):
    reports: list[Report]
    now: datetime


class Tick(msgspec.Struct, frozen=True):
    now: datetime


class PauseRollout(msgspec.Struct, frozen=True):
    now: datetime
    reason: str = ""


class ResumeRollout(msgspec.Struct, frozen=True):
    now: datetime


class CancelRollout(msgspec.Struct, frozen=True):
    now: datetime
    reason: str = "cancelled by operator"


class RollbackRollout(msgspec.Struct, frozen=True):
    now: datetime
    reason: str = "rolled back by operator"


RolloutCommand = (
    CreateRollout | StartRollout | ReportDevices | Tick | PauseRollout | ResumeRollout
    | CancelRollout | RollbackRollout
)


# --- state --------------------------------------------------------------------------------------
@dataclass
class WaveCount:
    size: int
    succeeded: int = 0
    failed: int = 0

    @property
    def pending(self) -> int:
        return self.size - self.succeeded - self.failed


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
    devices: dict[str, tuple[int, DeviceStatus, datetime]] = field(default_factory=dict)
    paused_at: datetime | None = None
    rolled_back: bool = False
    reason: str = ""  # why it was aborted, cancelled or rolled back

    @property
    def active(self) -> bool:
        return self.status in ("running", "paused")


def _invalid(message: str) -> DomainError:
    return DomainError(message, code="invalid_request")


# --- decide -------------------------------------------------------------------------------------
def decide(command: RolloutCommand, state: RolloutState) -> Sequence[RolloutEvent]:
    match command:
        case CreateRollout():
            return _create(command, state)
        case StartRollout():
            return _start(command, state)
        case ReportDevices(reports=reports, now=now):
            return _report(state, reports, now)
        case Tick(now=now):
            return _tick(state, now)
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
            return [resumed, *_advance(state, now, resuming=True)]
        case CancelRollout(now=now, reason=reason):
            if state.status == "cancelled":
                return []
            _require(state, ("created", "running", "paused"), "cancel")
            return [RolloutCancelled(reason, now)]
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


def _create(cmd: CreateRollout, state: RolloutState) -> Sequence[RolloutEvent]:
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
    plan_waves(["probe"], cmd.strategy)  # validates the strategy
    return [RolloutCreated(
        rollout_id=cmd.rollout_id, package=cmd.package, target=cmd.target, strategy=cmd.strategy,
        thresholds=t, timeouts=o, auto_rollback=cmd.auto_rollback, created_at=cmd.now,
        created_by=cmd.actor,
    )]


def _start(cmd: StartRollout, state: RolloutState) -> Sequence[RolloutEvent]:
    if state.status in ("running", "paused", "completed", "aborted", "rolled_back"):
        return []  # already started: starting twice is harmless
    _require(state, ("created",), "start")
    assert state.created is not None
    waves = plan_waves(cmd.device_ids, state.created.strategy)
    if not waves:
        raise DomainError(
            f"no eligible device for the target ({len(cmd.excluded)} excluded)", code="no_devices"
        )
    if any(not 0 <= i < len(cmd.previous_packages) for i in cmd.previous.values()):
        raise _invalid("previous: a device points outside previous_packages")
    plan = plan_events(waves, cmd.excluded, cmd.previous, cmd.previous_packages, cmd.now)
    return [*plan, *_start_wave(state.created, 0, waves[0], cmd.now)]


def _start_wave(created: RolloutCreated, index: int, wave: list[str], now: datetime) -> list[RolloutEvent]:
    deadline = now + timedelta(seconds=created.timeouts.device_s)
    return [WaveStarted(index, len(wave), now),
            *(DeviceTargeted(device_id, index, deadline) for device_id in wave)]


def _report(state: RolloutState, reports: Sequence[Report], now: datetime) -> Sequence[RolloutEvent]:
    if not state.active:
        return []  # late reports after the end change nothing
    events: list[RolloutEvent] = []
    seen: set[str] = set()
    for report in reports:
        entry = state.devices.get(report.device_id)
        if entry is None or entry[1] != "targeted" or report.device_id in seen:
            continue
        seen.add(report.device_id)
        wave = entry[0]
        events.append(
            DeviceSucceeded(report.device_id, wave, report.fact_id, report.observed_at) if report.ok
            else DeviceFailed(report.device_id, wave, report.reason or "failed", report.fact_id,
                              report.observed_at))
    return [*events, *_advance(state, now, pending=events)]


def _tick(state: RolloutState, now: datetime) -> Sequence[RolloutEvent]:
    if state.status != "running":
        return []
    timed_out: list[RolloutEvent] = [
        DeviceTimedOut(device_id, wave)
        for device_id, (wave, status, deadline) in state.devices.items()
        if status == "targeted" and deadline <= now
    ]
    return [*timed_out, *_advance(state, now, pending=timed_out)]


def _advance(
    state: RolloutState, now: datetime, pending: Sequence[RolloutEvent] = (), resuming: bool = False
) -> list[RolloutEvent]:
    """Thresholds of the current wave, counting `pending` (this decision's device outcomes)."""
    created = state.created
    assert created is not None
    index = state.current_wave
    count = state.counts[index]
    succeeded = count.succeeded + sum(isinstance(e, DeviceSucceeded) for e in pending)
    failed = count.failed + sum(isinstance(e, DeviceFailed | DeviceTimedOut) for e in pending)
    t = created.thresholds
    if failed / count.size > t.error:
        reason = (f"wave {index + 1}: {failed} of {count.size} devices failed, more than the "
                  f"{t.error:.0%} error threshold")
        events: list[RolloutEvent] = [RolloutAborted(reason, index, now)]
        return [*events, _rollback(state, reason, now)] if created.auto_rollback else events
    if state.wave_completed_at is None:
        if succeeded + failed < count.size:
            return []
        if succeeded / count.size < t.success:
            reason = (f"wave {index + 1}: {succeeded} of {count.size} devices succeeded, less than "
                      f"the {t.success:.0%} success threshold")
            events = [RolloutAborted(reason, index, now)]
            return [*events, _rollback(state, reason, now)] if created.auto_rollback else events
        completed = WaveCompleted(index, succeeded, failed, now)
        if index == len(state.waves) - 1:
            total_ok = sum(c.succeeded for c in state.counts[:index]) + succeeded
            total_failed = sum(c.failed for c in state.counts[:index]) + failed
            return [completed, RolloutCompleted(total_ok, total_failed, now)]
        if created.timeouts.soak_s > 0 or (state.status == "paused" and not resuming):
            return [completed]
        return [completed, *_start_wave(created, index + 1, state.waves[index + 1], now)]
    soak_until = state.wave_completed_at + timedelta(seconds=created.timeouts.soak_s)
    if now >= soak_until and (state.status == "running" or resuming):
        return _start_wave(created, index + 1, state.waves[index + 1], now)
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


# --- evolve (in place: see the module docstring) ------------------------------------------------
def evolve(state: RolloutState, event: RolloutEvent) -> RolloutState:
    match event:
        case RolloutCreated():
            state.status, state.created = "created", event
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
        case DevicesExcluded(devices=devices):
            state.excluded.update((d.device_id, d.reason) for d in devices)
        case RolloutPlannedV1():
            for planned in expand_v1(event):
                evolve(state, planned)
            state.planned_v1 = True
        case WaveStarted(wave=index):
            state.current_wave, state.wave_completed_at = index, None
        case DeviceTargeted(device_id=device_id, wave=index, deadline=deadline):
            state.devices[device_id] = (index, "targeted", deadline)
        case DeviceSucceeded(device_id=device_id, wave=index):
            state.devices[device_id] = (index, "succeeded", state.devices[device_id][2])
            state.counts[index].succeeded += 1
        case DeviceFailed(device_id=device_id, wave=index):
            state.devices[device_id] = (index, "failed", state.devices[device_id][2])
            state.counts[index].failed += 1
        case DeviceTimedOut(device_id=device_id, wave=index):
            state.devices[device_id] = (index, "timed_out", state.devices[device_id][2])
            state.counts[index].failed += 1
        case WaveCompleted(at=at):
            state.wave_completed_at = at
        case RolloutPaused(at=at):
            state.status, state.paused_at = "paused", at
        case RolloutResumed(paused_for_s=paused_for):
            # Devices get their deadlines back: time spent paused does not count against them.
            shift = timedelta(seconds=paused_for)
            for device_id, (index, status, deadline) in state.devices.items():
                if status == "targeted":
                    state.devices[device_id] = (index, status, deadline + shift)
            state.status, state.paused_at = "running", None
        case RolloutAborted(reason=reason):
            state.status, state.reason = "aborted", reason
        case RollbackStarted(reason=reason) | RollbackStartedV1(reason=reason):
            state.status, state.rolled_back = "rolled_back", True
            state.reason = state.reason or reason
        case RolloutCompleted():
            state.status = "completed"
        case RolloutCancelled(reason=reason):
            state.status, state.reason = "cancelled", reason
    return state


rollout_decider: Decider[RolloutCommand, RolloutEvent, RolloutState] = Decider(
    RolloutState, decide, evolve
)
