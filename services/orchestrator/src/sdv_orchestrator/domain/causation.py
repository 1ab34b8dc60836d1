"""What caused each event of one rollout decision (recorded in its metadata): the device's fact
for an outcome a fact reported, an earlier event of the same decision for what follows from
it, or the command itself. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    PreviousPackages,
    RollbackCompleted,
    RollbackStarted,
    RollbackStartedV1,
    RolloutAborted,
    RolloutCompleted,
    RolloutCreated,
    RolloutPlanned,
    RolloutPlannedV1,
    WaveCompleted,
    WaveStarted,
)
from sdv_events.schemas.scheduling import DeviceDeferred, DeviceStaged, DevicesWindowed, RolloutWaiting

_DEVICE_OUTCOMES = (DeviceSucceeded, DeviceFailed, DeviceTimedOut, DeviceOffline, DeviceBackOnline,
                    DeviceRolledBack, DeviceRollbackUnconfirmed)


def causes(events: Sequence[object]) -> list[int | str | None]:
    """What caused each event of one decision: the device's fact (its event id) for an outcome
    a fact reported; an earlier event of the same decision (its index) for what follows from it
    — an abort from the outcome that crossed the threshold, a rollback from the abort, a wave's
    end from the outcome that completed it, a device's targeting from its wave's start;
    None for what the command itself caused (its own causation id: the operator's command,
    the policy's event, the timer tick)."""
    found: list[int | str | None] = []
    last_outcome = last_wave = last_abort = last_completed = last_created = last_plan = None
    for i, event in enumerate(events):
        cause: int | str | None = None
        match event:
            case DeviceSucceeded(fact_id=f) | DeviceFailed(fact_id=f) | DeviceTimedOut(fact_id=f) \
                    | DeviceRolledBack(fact_id=f) | DeviceRollbackUnconfirmed(fact_id=f) \
                    | DeviceStaged(fact_id=f) | DeviceDeferred(fact_id=f):
                cause = str(f) if f is not None else None
            case RolloutAborted() | RollbackCompleted():
                cause = last_outcome
            case RollbackStarted() | RollbackStartedV1():
                cause = last_abort
            case WaveCompleted():
                cause = last_outcome
            case RolloutCompleted():
                cause = last_completed
            case WaveStarted():
                cause = last_completed if last_completed is not None else last_plan
            case DeviceTargeted():
                cause = last_wave
            case RolloutPlanned() | RolloutPlannedV1():
                cause = last_created
            case PreviousPackages() | DevicesPlanned() | DevicesOffline() | DevicesExcluded() \
                    | DevicesWindowed():
                cause = last_plan
            case RolloutWaiting():
                cause = last_wave
        found.append(cause)
        if isinstance(event, _DEVICE_OUTCOMES):
            last_outcome = i
        elif isinstance(event, WaveStarted):
            last_wave = i
        elif isinstance(event, RolloutAborted):
            last_abort = i
        elif isinstance(event, WaveCompleted):
            last_completed = i
        elif isinstance(event, RolloutCreated):
            last_created = i
        elif isinstance(event, RolloutPlanned | RolloutPlannedV1):
            last_plan = i
    return found
