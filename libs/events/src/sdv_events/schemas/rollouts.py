"""Rollout events (stream `rollout-<id>`, written by the orchestrator) and rollout settings.

Shared because the monitor and dashboards read them; the orchestrator alone writes them.

No event grows with the fleet. A plan is written as a header (`RolloutPlanned` v2: counts only)
followed, in the same append, by bounded chunks: `PreviousPackages` (the distinct packages the
targeted devices ran before, each once), `DevicesPlanned` (device, wave, index of its previous
package), `DevicesOffline` (planned devices offline when planned) and `DevicesExcluded`.
`RollbackStarted` v2 names no device: the rollout's touched devices and their previous packages
are already in its stream (and in the read models).
Version 1 of both (`RolloutPlannedV1`, `RollbackStartedV1`: every device listed) stays
decodable for histories written before; an upcaster cannot split one event into many.

Each device ends in one final state, each recorded by one event: `DeviceSucceeded` (reason
`already_current` when the device already ran the version), `DeviceFailed`, `DeviceTimedOut`,
`DeviceOffline` (offline at its deadline: skipped, waiting or failed, as the rollout's `offline`
option says) and, after a rollback, `DeviceRolledBack` or `DeviceRollbackUnconfirmed`, then one
`RollbackCompleted`. Every event carries in its metadata what caused it (the command, the
device's fact, an earlier event of the same decision or the timer tick) and who acted.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from sdv_events.registry import event
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.scheduling import Deferral, Schedule, Waiting

StrategyKind = Literal["all-at-once", "rolling", "canary"]
# What a device offline (by the registry's heartbeats) at its deadline means for the rollout:
# `skip`: not counted, reported apart (it takes the version when it comes back: its desired
# document stays); `wait`: the rollout waits for it (its deadline restarts once it is back);
# `fail`: counted as a failure (the behaviour before the option existed).
OfflineOption = Literal["skip", "wait", "fail"]
OFFLINE_OPTIONS: tuple[OfflineOption, ...] = ("skip", "wait", "fail")


class Target(msgspec.Struct, frozen=True, omit_defaults=True):
    """Either a label selector (`env=prod,type in (jetson-orin)`) or explicit device ids."""

    selector: str | None = None
    device_ids: list[str] | None = None


class Strategy(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: StrategyKind = "canary"
    # canary: cumulative wave sizes, absolute counts or percentages: ["1", "10%", "50%", "100%"]
    waves: list[str] = msgspec.field(default_factory=lambda: ["1", "10%", "50%", "100%"])
    # rolling: devices per batch
    batch_size: int = 10


class Thresholds(msgspec.Struct, frozen=True):
    success: float = 0.95  # share of a wave that must succeed to advance
    error: float = 0.05  # share of a wave that, once failed, aborts the rollout (strictly more)


class Timeouts(msgspec.Struct, frozen=True):
    device_s: float = 600.0  # no report within this → DeviceTimedOut (a failure)
    soak_s: float = 0.0  # wait after a wave completes before the next starts


class PreviousAssignment(msgspec.Struct, frozen=True):
    """What a device ran before this rollout touched it (None package: app not installed).
    Only in version 1 events (`RolloutPlannedV1`, `RollbackStartedV1`)."""

    device_id: str
    package: PackageInfo | None = None


class PlannedDevice(msgspec.Struct, frozen=True, array_like=True):
    """`["dev-1", 0, 2]`: a device, its wave, and the index of the package it ran before in
    the plan's `PreviousPackages` table (`null`: the app was not installed)."""

    device_id: str
    wave: int
    previous: int | None = None


class ExcludedDevice(msgspec.Struct, frozen=True, array_like=True):
    device_id: str
    reason: str  # why it cannot take this package


@event("orchestrator.RolloutCreated")
class RolloutCreated(msgspec.Struct, frozen=True, kw_only=True):
    rollout_id: str
    package: PackageInfo
    target: Target
    strategy: Strategy
    thresholds: Thresholds
    timeouts: Timeouts
    auto_rollback: bool = True
    created_at: datetime
    created_by: str = ""
    offline: OfflineOption = "skip"
    # Windows, pacing, start time, activation gates and hold (schemas/scheduling.py); events
    # written before it existed decode with the default: no schedule, as they ran.
    schedule: Schedule = Schedule()


@event("orchestrator.RolloutPlanned")
class RolloutPlannedV1(msgspec.Struct, frozen=True, kw_only=True):
    """The plan as written before version 2: every device inline (grew with the fleet)."""

    waves: list[list[str]]
    excluded: dict[str, str] = {}  # device id → why it cannot take this package
    previous: list[PreviousAssignment] = []
    planned_at: datetime


@event("orchestrator.RolloutPlanned", 2)
class RolloutPlanned(msgspec.Struct, frozen=True, kw_only=True):
    """Header of a plan; its chunks follow in the same append (see the module docstring)."""

    devices: int  # planned (targeted over the waves)
    waves: int
    excluded: int = 0
    previous_packages: int = 0  # distinct packages in the `PreviousPackages` chunks
    planned_at: datetime
    offline: int = 0  # planned devices offline when planned (`DevicesOffline` chunks)


@event("orchestrator.PreviousPackages")
class PreviousPackages(msgspec.Struct, frozen=True):
    """Entries `first`, `first + 1`, … of the plan's table of previous packages."""

    first: int
    packages: list[PackageInfo]


@event("orchestrator.DevicesPlanned")
class DevicesPlanned(msgspec.Struct, frozen=True):
    chunk: int
    devices: list[PlannedDevice]


class OfflineDevice(msgspec.Struct, frozen=True, array_like=True):
    """`["dev-9", 3]`: a planned device offline when planned, and its wave."""

    device_id: str
    wave: int


@event("orchestrator.DevicesOffline")
class DevicesOffline(msgspec.Struct, frozen=True):
    """Planned devices that were offline when planned (the registry had no recent heartbeat):
    placed after the online ones, shown as "waiting: offline" from the start."""

    chunk: int
    devices: list[OfflineDevice]


@event("orchestrator.DevicesExcluded")
class DevicesExcluded(msgspec.Struct, frozen=True):
    chunk: int
    devices: list[ExcludedDevice]


@event("orchestrator.WaveStarted")
class WaveStarted(msgspec.Struct, frozen=True):
    wave: int
    size: int  # its devices are the plan's `DevicesPlanned` entries of this wave
    at: datetime


@event("orchestrator.DeviceTargeted")
class DeviceTargeted(msgspec.Struct, frozen=True):
    device_id: str
    wave: int
    deadline: datetime
    # When it was targeted (paced rollouts are rebuilt from these); None in events written
    # before, when a wave's devices were all targeted as it started.
    at: datetime | None = None


@event("orchestrator.DeviceSucceeded")
class DeviceSucceeded(msgspec.Struct, frozen=True):
    device_id: str
    wave: int
    # The device's fact this decision rests on (its event id and when the device observed it):
    # recorded here so the rollout's history stands without the bus (facts live only there).
    fact_id: uuid.UUID | None = None
    observed_at: datetime | None = None
    # "already_current": the device already ran this version, healthy (`agent.AppAlreadyCurrent`).
    reason: str = ""


@event("orchestrator.DeviceFailed")
class DeviceFailed(msgspec.Struct, frozen=True):
    device_id: str
    wave: int
    reason: str
    fact_id: uuid.UUID | None = None  # as in DeviceSucceeded
    observed_at: datetime | None = None


@event("orchestrator.DeviceTimedOut")
class DeviceTimedOut(msgspec.Struct, frozen=True):
    """No report that happened by the deadline (plus the clock-skew tolerance). With a fact: the
    device did report, but what it reports happened after its deadline."""

    device_id: str
    wave: int
    fact_id: uuid.UUID | None = None
    observed_at: datetime | None = None


OfflineOutcome = Literal["skipped", "waiting", "failed"]


@event("orchestrator.DeviceOffline")
class DeviceOffline(msgspec.Struct, frozen=True):
    """The device was offline at its deadline: `skipped` (not counted), `waiting` (no deadline
    until it is back) or `failed` (counted as a failure), as the rollout's `offline` option says."""

    device_id: str
    wave: int
    outcome: OfflineOutcome
    at: datetime


@event("orchestrator.DeviceBackOnline")
class DeviceBackOnline(msgspec.Struct, frozen=True):
    """A device the rollout waited for is online again: it has until `deadline` to report."""

    device_id: str
    wave: int
    deadline: datetime


@event("orchestrator.DeviceRolledBack")
class DeviceRolledBack(msgspec.Struct, frozen=True):
    """After a rollback, the device reports its previous version running (or the app removed,
    when it had none before)."""

    device_id: str
    wave: int
    fact_id: uuid.UUID | None = None
    observed_at: datetime | None = None


@event("orchestrator.DeviceRollbackUnconfirmed")
class DeviceRollbackUnconfirmed(msgspec.Struct, frozen=True):
    """After a rollback, the device reported a failure of its previous version, or nothing by
    its rollback deadline (`reason` says which)."""

    device_id: str
    wave: int
    reason: str
    fact_id: uuid.UUID | None = None
    observed_at: datetime | None = None


@event("orchestrator.WaveCompleted")
class WaveCompleted(msgspec.Struct, frozen=True):
    wave: int
    succeeded: int
    failed: int
    at: datetime
    skipped: int = 0  # offline at their deadline, not counted (`offline: skip`)


@event("orchestrator.RolloutPaused")
class RolloutPaused(msgspec.Struct, frozen=True):
    at: datetime
    reason: str = ""


@event("orchestrator.RolloutResumed")
class RolloutResumed(msgspec.Struct, frozen=True):
    at: datetime
    paused_for_s: float


@event("orchestrator.RolloutAborted")
class RolloutAborted(msgspec.Struct, frozen=True):
    reason: str
    wave: int
    at: datetime


@event("orchestrator.RollbackStarted")
class RollbackStartedV1(msgspec.Struct, frozen=True):
    """Rollback as written before version 2 (and still for rollouts planned in version 1)."""

    devices: list[PreviousAssignment]
    reason: str
    at: datetime


@event("orchestrator.RollbackStarted", 2)
class RollbackStarted(msgspec.Struct, frozen=True):
    """Every device the rollout targeted goes back to its planned previous package (or loses
    the app), unless a later rollout owns that app on it now."""

    reason: str
    at: datetime
    devices: int  # how many devices the rollout had targeted


@event("orchestrator.RollbackCompleted")
class RollbackCompleted(msgspec.Struct, frozen=True):
    """Every device the rollback touched is accounted for: rolled back, or unconfirmed."""

    rolled_back: int
    unconfirmed: int
    at: datetime


@event("orchestrator.RolloutCompleted")
class RolloutCompleted(msgspec.Struct, frozen=True):
    succeeded: int
    failed: int
    at: datetime
    skipped: int = 0


@event("orchestrator.RolloutCancelled")
class RolloutCancelled(msgspec.Struct, frozen=True):
    reason: str
    at: datetime


# --- orchestrator commands and queries (sdv.cmd.orchestrator.<name>) -----------------------------


class CreateRolloutRequest(msgspec.Struct, frozen=True, kw_only=True):
    package: str  # app name
    version: str
    target: Target
    strategy: Strategy = msgspec.field(default_factory=Strategy)
    thresholds: Thresholds = Thresholds()
    timeouts: Timeouts = Timeouts()
    auto_rollback: bool = True
    start: bool = True  # plan and start at once: nothing is stored unless the start succeeds
    rollout_id: str | None = None  # chosen by the caller for idempotent retries
    offline: OfflineOption = "skip"
    schedule: Schedule = Schedule()


class RolloutRef(msgspec.Struct, frozen=True):
    rollout_id: str
    reason: str = ""


class ListRollouts(msgspec.Struct, frozen=True, kw_only=True):
    app: str | None = None
    status: str | None = None
    limit: int = 100


class WaveView(msgspec.Struct, frozen=True):
    index: int
    size: int
    succeeded: int
    failed: int
    pending: int  # neither succeeded, failed nor skipped yet
    state: str  # waiting | running | completed | aborted
    skipped: int = 0  # offline at their deadline, not counted (`offline: skip`)
    offline: int = 0  # pending devices known offline ("waiting: offline")
    queued: int = 0  # planned, not targeted yet (windows, start time, rate, max in flight)


# A device's state in `get`: `waiting_offline` from the start for a device offline when
# planned (listed before its wave starts), `targeted`, `waiting_offline`; then one final state:
# `staged` (downloaded and verified, waiting to switch) and `deferred` (`deferral` says why),
# then one final state:
# `succeeded`, `already_current`, `failed`, `timed_out`, `skipped_offline`, and after a
# rollback `rolling_back`, then `rolled_back` or `rollback_unconfirmed`; a device still
# targeted when the rollout was cancelled (or aborted without rollback) shows `cancelled` or
# `aborted`.
class DeviceProgressView(msgspec.Struct, frozen=True):
    device_id: str
    wave: int
    status: str
    reason: str = ""  # why it failed, or what it was before it was rolled back
    deferral: Deferral | None = None  # a deferred device: why it does not switch yet


MAX_PAGE = 2000  # rows per list in one RolloutView: a reply stays far below NATS's 1 MB


class GetRollout(msgspec.Struct, frozen=True, kw_only=True):
    """`get`: one page of a rollout's view: rows [offset, offset + limit) of each of its lists
    (waves, devices, excluded), with their totals. A plain `RolloutRef` asks for the first page."""

    rollout_id: str
    offset: int = 0
    limit: int = 1000


class RolloutView(msgspec.Struct, frozen=True, kw_only=True):
    """A rollout with one page of its lists (`GetRollout`); the totals say how many there are.
    Replies to start, pause, resume, cancel and rollback carry the first page."""

    rollout_id: str
    app: str
    version: str
    status: str
    target: Target
    strategy: Strategy
    waves: list[WaveView] = []
    devices: list[DeviceProgressView] = []
    excluded: dict[str, str] = {}
    current_wave: int = -1
    reason: str = ""
    created_at: datetime | None = None
    version_in_stream: int = 0
    offset: int = 0
    limit: int = 0
    waves_total: int = 0
    devices_total: int = 0
    excluded_total: int = 0
    succeeded_total: int = 0
    failed_total: int = 0
    offline: OfflineOption = "skip"  # the rollout's option for devices offline at their deadline
    offline_total: int = 0  # pending devices known offline ("waiting: offline")
    skipped_total: int = 0
    already_current_total: int = 0
    rollback: str = ""  # "" (none), "in_progress" or "completed"
    rolled_back_total: int = 0
    rollback_unconfirmed_total: int = 0
    schedule: Schedule = Schedule()
    # Set while the rollout waits for its start time or a window (`status` is then "waiting").
    waiting: Waiting | None = None
    queued_total: int = 0  # planned devices of started waves not targeted yet
    staged_total: int = 0  # staged or deferred: downloaded, waiting to switch (not failures)
    deferred_total: int = 0  # of those, the ones that reported why they wait
    deferred_by: dict[str, int] = {}  # deferred devices by the gate that holds them ("held")
    activated_total: int = 0  # devices whose hold an operator released


class RolloutSummary(msgspec.Struct, frozen=True, kw_only=True):
    rollout_id: str
    app: str
    version: str
    status: str
    devices: int
    succeeded: int
    failed: int
    created_at: datetime
    updated_at: datetime
    schedule: Schedule = Schedule()
    waiting: Waiting | None = None  # an active rollout waiting for its start time or a window
    staged: int = 0  # an active rollout's devices waiting to switch (deferred included)
    deferred: int = 0


class RolloutList(msgspec.Struct, frozen=True):
    rollouts: list[RolloutSummary]


# --- policies: event → command (stream `policy-<name>`) ----------------------------------------


class RolloutPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Roll out `app` whenever a version lands on `channel` (published there or promoted to
    it), to `target`; with `auto_assign`, newly accepted devices the target selects get the
    fleet's current version of the app."""

    name: str
    app: str
    channel: Literal["dev", "beta", "stable"]
    target: Target
    strategy: Strategy = msgspec.field(default_factory=Strategy)
    thresholds: Thresholds = Thresholds()
    timeouts: Timeouts = Timeouts()
    auto_rollback: bool = True
    auto_assign: bool = True
    enabled: bool = True
    offline: OfflineOption = "skip"
    schedule: Schedule = Schedule()  # the rollouts it starts get it


@event("orchestrator.PolicySet")
class PolicySet(msgspec.Struct, frozen=True):
    policy: RolloutPolicy


@event("orchestrator.PolicyDeleted")
class PolicyDeleted(msgspec.Struct, frozen=True):
    name: str


class PolicyRef(msgspec.Struct, frozen=True):
    name: str


class PolicyList(msgspec.Struct, frozen=True):
    policies: list[RolloutPolicy]
