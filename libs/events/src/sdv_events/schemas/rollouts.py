"""Rollout events (stream `rollout-<id>`, written by the orchestrator) and rollout settings.

Shared because the monitor and dashboards read them; the orchestrator alone writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from sdv_events.registry import event
from sdv_events.schemas.packages import PackageInfo

StrategyKind = Literal["all-at-once", "rolling", "canary"]


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
    """What a device ran before this rollout touched it (None package: app not installed)."""

    device_id: str
    package: PackageInfo | None = None


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


@event("orchestrator.RolloutPlanned")
class RolloutPlanned(msgspec.Struct, frozen=True, kw_only=True):
    waves: list[list[str]]
    excluded: dict[str, str] = {}  # device id → why it cannot take this package
    previous: list[PreviousAssignment] = []
    planned_at: datetime


@event("orchestrator.WaveStarted")
class WaveStarted(msgspec.Struct, frozen=True):
    wave: int
    size: int  # its device ids are in RolloutPlanned.waves[wave]
    at: datetime


@event("orchestrator.DeviceTargeted")
class DeviceTargeted(msgspec.Struct, frozen=True):
    device_id: str
    wave: int
    deadline: datetime


@event("orchestrator.DeviceSucceeded")
class DeviceSucceeded(msgspec.Struct, frozen=True):
    device_id: str
    wave: int


@event("orchestrator.DeviceFailed")
class DeviceFailed(msgspec.Struct, frozen=True):
    device_id: str
    wave: int
    reason: str


@event("orchestrator.DeviceTimedOut")
class DeviceTimedOut(msgspec.Struct, frozen=True):
    device_id: str
    wave: int


@event("orchestrator.WaveCompleted")
class WaveCompleted(msgspec.Struct, frozen=True):
    wave: int
    succeeded: int
    failed: int
    at: datetime


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
class RollbackStarted(msgspec.Struct, frozen=True):
    devices: list[PreviousAssignment]
    reason: str
    at: datetime


@event("orchestrator.RolloutCompleted")
class RolloutCompleted(msgspec.Struct, frozen=True):
    succeeded: int
    failed: int
    at: datetime


@event("orchestrator.RolloutCancelled")
class RolloutCancelled(msgspec.Struct, frozen=True):
    reason: str
    at: datetime
