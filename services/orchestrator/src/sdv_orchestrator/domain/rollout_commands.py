"""Commands of the rollout decider (domain/rollout.py): what the application asks of a rollout,
with the time (`now`) and every lookup's answer in them. Pure data.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import msgspec

from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import OfflineOption, Strategy, Target, Thresholds, Timeouts
from sdv_events.schemas.scheduling import Deferral, Schedule
from sdv_orchestrator.domain.activation import ActivateDevices


class StartRollout(msgspec.Struct, frozen=True, kw_only=True):
    device_ids: list[str]  # eligible devices, resolved and filtered by the application
    excluded: dict[str, str] = {}
    previous_packages: list[PackageInfo] = []  # distinct packages the devices run now
    previous: dict[str, int] = {}  # device → index in previous_packages (absent: not installed)
    offline: list[str] = []  # eligible devices the registry shows offline: planned last
    # The devices' labels, for label windows (only needed when the schedule has some).
    labels: dict[str, dict[str, str]] = {}
    now: datetime


class CreateRollout(msgspec.Struct, frozen=True, kw_only=True):
    rollout_id: str
    package: PackageInfo
    target: Target
    strategy: Strategy = Strategy()
    thresholds: Thresholds = Thresholds()
    timeouts: Timeouts = Timeouts()
    auto_rollback: bool = True
    offline: OfflineOption = "skip"
    schedule: Schedule = Schedule()
    now: datetime
    actor: str = ""
    # Create and start in one decision (one append): a create that cannot start stores nothing.
    plan: StartRollout | None = None


# "staged" / "deferred": not an outcome, the device waits to switch (domain/deferral.py).
ReportKind = Literal["", "already_current", "uninstalled", "staged", "deferred"]


class Report(msgspec.Struct, frozen=True):
    device_id: str
    ok: bool
    reason: str = ""
    fact_id: uuid.UUID | None = None  # the device's fact reporting it, recorded in the event
    observed_at: datetime | None = None  # when the device observed it (the fact's occurred_at)
    digest: str | None = None  # the version the fact is about (None: the rollout's)
    kind: ReportKind = ""
    deferral: Deferral | None = None  # kind "deferred": why it waits


class ReportDevices(msgspec.Struct, frozen=True):
    reports: list[Report]
    now: datetime
    tolerance_s: float = 0.0  # clock skew allowed between a device and the orchestrator


class Tick(msgspec.Struct, frozen=True):
    now: datetime
    # Every device fact published before this time has been handled (None: `now`, for tests
    # and tools; the service always says). Deadlines are judged against it, not against `now`.
    facts_until: datetime | None = None
    # What the registry says now about the devices the application asked for (True: online);
    # a device not in it is judged by what was known when it was planned.
    presence: Mapping[str, bool] = msgspec.field(default_factory=dict)
    tolerance_s: float = 0.0


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
    | CancelRollout | RollbackRollout | ActivateDevices
)
