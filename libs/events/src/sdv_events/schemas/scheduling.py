"""A rollout's schedule (carried by `RolloutCreated` and by policies) and the events of scheduled
targeting and deferred activation (stream `rollout-<id>`, written by the orchestrator).

- `Schedule`: when devices may be targeted (maintenance windows, rollout-wide and per label;
  a start time), how fast (`Pacing`: a rate per minute growing per wave, max in flight), and
  when a targeted device may switch to the new version (activation gates, a hold released by
  `sdv rollout activate`), with the activation deadline of devices that wait to switch.
  Windows and gates are kept as operators write them (`sdv_events.windows`, `sdv_events.gates`);
  `sdv_events.schedules.check_schedule` says what is wrong with one.
- `RolloutWaiting`: the rollout has devices left to target but may target none before `until`
  (its start time, or the next opening of their windows); written when that state begins.
- `DevicesWindowed`: plan chunks naming the devices that label windows apply to.
- `DeviceStaged` / `DeviceDeferred`: a device downloaded and verified the version and waits to
  switch (the agent's `AppStaged` / `ActivationDeferred`); from then on it is judged by its
  activation deadline, not the device timeout, and counted apart from failures.
- `ActivationRequested`: an operator released the hold of some (or all targeted) devices.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from sdv_events.errors import DomainError
from sdv_events.registry import event

# A day: a gate like `Vehicle.Speed == 0` holds once the vehicle is parked, which most vehicles
# are at least once a day; a daily maintenance window opens once a day. A device still not
# switched after a full day of that is worth counting as failed; an operator who expects longer
# (a hold released by hand next week) says so per rollout.
DEFAULT_ACTIVATION_TIMEOUT_S = 86_400.0
MAX_LABEL_WINDOWS = 16
MAX_ACTIVATE = 1000  # devices named by one `activate` (the event stays bounded)


class Pacing(msgspec.Struct, frozen=True, omit_defaults=True):
    """How fast a rollout may target devices (AWS IoT Jobs' rollout rate and max in flight)."""

    per_minute: float | None = None  # None: no rate limit
    growth: float = 1.0  # the rate of wave w is per_minute * growth**w (capped by max_per_minute)
    max_per_minute: float | None = None
    max_in_flight: int | None = None  # targeted and not yet reported; None: no cap

    def check(self) -> Pacing:
        if self.per_minute is not None and not 0 < self.per_minute <= 1_000_000:
            raise DomainError(
                "a rate must be between 0 and 1,000,000 devices per minute", code="invalid_request"
            )
        if not 1.0 <= self.growth <= 100.0:
            raise DomainError("a rate's growth factor must be between 1 and 100", code="invalid_request")
        if self.max_per_minute is not None and not 0 < self.max_per_minute <= 1_000_000:
            raise DomainError(
                "a maximum rate must be between 0 and 1,000,000 devices per minute",
                code="invalid_request",
            )
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise DomainError("max in flight must be at least 1", code="invalid_request")
        return self

    def rate(self, wave: int) -> float | None:
        """Devices per minute for wave `wave` (0-based)."""
        if self.per_minute is None:
            return None
        rate = self.per_minute * self.growth ** min(wave, 64)
        return min(rate, self.max_per_minute) if self.max_per_minute else rate

    @property
    def limited(self) -> bool:
        return self.per_minute is not None or self.max_in_flight is not None


class LabelWindow(msgspec.Struct, frozen=True):
    """Maintenance windows of the devices carrying one label (`zone=eu`): they replace the
    rollout-wide windows for those devices (a device with several such labels may be targeted
    in any of their windows)."""

    label: str  # key=value
    windows: list[str]


class Schedule(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    # Rollout-wide maintenance windows (`Mon-Fri 22:00-05:00 Europe/Berlin`); none: any time.
    windows: list[str] = []
    label_windows: list[LabelWindow] = []
    pacing: Pacing = Pacing()
    start_at: datetime | None = None  # no device is targeted before
    # Activation: what the desired documents carry (`deployment.Activation`).
    gates: list[str] = []  # VSS conditions that must hold on the vehicle before it switches
    hold: bool = False  # download now; switch on `sdv rollout activate`
    # How long a staged (downloaded, verified) device may wait to switch before it counts as
    # failed — apart from, and longer than, the device timeout (which covers the download).
    activation_timeout_s: float = DEFAULT_ACTIVATION_TIMEOUT_S

    @property
    def defers(self) -> bool:
        """Whether devices may wait to switch (and so are judged by the activation deadline)."""
        return bool(self.gates) or self.hold


WaitReason = Literal["start_at", "window"]


@event("orchestrator.RolloutWaiting")
class RolloutWaiting(msgspec.Struct, frozen=True, kw_only=True):
    """No device can be targeted now: before the rollout's start time (`start_at`), or every
    device left in the wave is outside its maintenance windows (`window`). `until`: when
    targeting can go on (the start time, the next opening). The rollout goes on by itself."""

    reason: WaitReason
    until: datetime | None
    wave: int
    at: datetime


class WindowedDevice(msgspec.Struct, frozen=True, array_like=True):
    """`["dev-3", 2]`: a planned device and the label windows that apply to it, as a bit mask
    over the schedule's `label_windows` (bit i: entry i)."""

    device_id: str
    labels: int


@event("orchestrator.DevicesWindowed")
class DevicesWindowed(msgspec.Struct, frozen=True):
    """Plan chunk: the planned devices that label windows apply to (the others: the rollout's
    own windows)."""

    chunk: int
    devices: list[WindowedDevice]


@event("orchestrator.DeviceStaged")
class DeviceStaged(msgspec.Struct, frozen=True, kw_only=True):
    """The device downloaded and verified the version and waits to switch to it; `deadline`:
    when it counts as failed if it has not (its activation deadline)."""

    device_id: str
    wave: int
    deadline: datetime
    fact_id: uuid.UUID | None = None
    observed_at: datetime | None = None


@event("orchestrator.DeviceDeferred")
class DeviceDeferred(msgspec.Struct, frozen=True, kw_only=True):
    """Why a staged device does not switch yet, recorded when the reason changes: a gate that
    does not hold (with the signal and the value its databroker has; none: no value), or the
    rollout's hold. Not a failure."""

    device_id: str
    wave: int
    reason: str
    gate: str | None = None
    signal: str | None = None
    value: float | bool | str | None = None
    held: bool = False
    fact_id: uuid.UUID | None = None
    observed_at: datetime | None = None


@event("orchestrator.ActivationRequested")
class ActivationRequested(msgspec.Struct, frozen=True, kw_only=True):
    """An operator released the hold: of `device_ids`, or (`all`) of every device the rollout
    had targeted then. Their desired documents are written again without the hold (gates stay:
    a device still switches only when they hold)."""

    device_ids: list[str] = []
    all: bool = False
    devices: int  # how many held devices it released
    by: str = ""
    at: datetime


# --- commands and views (sdv.cmd.orchestrator.activate, rollout views) -------------------------


class ActivateRollout(msgspec.Struct, frozen=True, kw_only=True):
    """`activate`: release the hold of these devices (none named: every targeted device)."""

    rollout_id: str
    device_ids: list[str] = []


class Waiting(msgspec.Struct, frozen=True, kw_only=True):
    """A rollout that waits (see `RolloutWaiting`), for views."""

    reason: WaitReason
    until: datetime | None
    since: datetime
    message: str


class Deferral(msgspec.Struct, frozen=True, kw_only=True):
    """Why a device waits to switch (its last `DeviceDeferred`)."""

    reason: str
    gate: str | None = None
    signal: str | None = None
    value: float | bool | str | None = None
    held: bool = False
    since: datetime | None = None
