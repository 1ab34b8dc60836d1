"""Devices that downloaded and verified the version and wait to switch to it (download now,
activate later): from the agent's `AppStaged` a device is *staged*, from its
`ActivationDeferred` *deferred* (the reason recorded each time it changes). A deferral is not a
failure: from staging on, a device is judged by its activation deadline — staged at plus the
schedule's `activation_timeout_s` — instead of the device timeout, which covers the download.
Past that deadline it fails, the reason naming the deadline and its last deferral; offline then,
it is skipped, waited for or failed as the rollout's `offline` option says.

A staging report about a device that never staged by its device deadline is a timeout, as any
late report. A rollout whose schedule defers nothing (no gates, no hold) keeps the device
deadline for staged devices: nothing should hold them back. Pure.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sdv_events.schemas.rollouts import DeviceFailed, DeviceTimedOut, RolloutCreated
from sdv_events.schemas.scheduling import Deferral, DeviceDeferred, DeviceStaged

STAGED: frozenset[str] = frozenset({"staged", "deferred"})
StagingEvent = DeviceStaged | DeviceDeferred | DeviceTimedOut
Entry = tuple[int, str, datetime | None]  # a targeted device's wave, status and deadline


def activation_deadline(created: RolloutCreated, deadline: datetime | None, at: datetime) -> datetime:
    """A device staged at `at` with device deadline `deadline`: until when it may wait."""
    if not created.schedule.defers:
        return deadline if deadline is not None else at + timedelta(seconds=created.timeouts.device_s)
    waits = at + timedelta(seconds=created.schedule.activation_timeout_s)
    return waits if deadline is None else max(deadline, waits)


def staging(created: RolloutCreated, device_id: str, wave: int, status: str,
            deadline: datetime | None, report: StagingReport, last: DeviceDeferred | None,
            slack: timedelta, now: datetime) -> list[StagingEvent]:
    """What a staging report (`kind` "staged" or "deferred") of a device without an outcome
    means: staged (unless it already was), and deferred when the reason is new."""
    events: list[StagingEvent] = []
    at = report.observed_at or now
    if status not in STAGED:
        if deadline is not None and report.observed_at is not None and report.observed_at > deadline + slack:
            return [DeviceTimedOut(device_id, wave, report.fact_id, report.observed_at)]
        events.append(DeviceStaged(device_id=device_id, wave=wave,
                                   deadline=activation_deadline(created, deadline, at),
                                   fact_id=report.fact_id, observed_at=report.observed_at))
    why = report.deferral
    if why is not None and (last is None
                            or (last.reason, last.gate, last.held) != (why.reason, why.gate, why.held)):
        events.append(DeviceDeferred(
            device_id=device_id, wave=wave, reason=why.reason, gate=why.gate, signal=why.signal,
            value=why.value, held=why.held, fact_id=report.fact_id, observed_at=report.observed_at))
    return events


class StagingReport(Protocol):
    """What `staging` reads of a report (the rollout's `Report` is one)."""

    @property
    def fact_id(self) -> uuid.UUID | None: ...
    @property
    def observed_at(self) -> datetime | None: ...
    @property
    def deferral(self) -> Deferral | None: ...


def not_activated(created: RolloutCreated, last: DeviceDeferred | None) -> str:
    """Why a staged device failed at its activation deadline."""
    timeout = duration(created.schedule.activation_timeout_s)
    why = f"last deferral: {last.reason}" if last is not None else "it never reported why it waited"
    return f"not activated by its activation deadline ({timeout} after it was staged); {why}"


def duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def deferral_of(event: DeviceDeferred) -> Deferral:
    return Deferral(reason=event.reason, gate=event.gate, signal=event.signal, value=event.value,
                    held=event.held, since=event.observed_at)


@dataclass
class StagingBatch:
    """One batch of reports: a staging report changes the device's entry (status, deadline)
    and last deferral for the later reports of the same batch (the state is evolved only after
    the decision)."""

    created: RolloutCreated
    devices: Mapping[str, Entry]
    deferrals: Mapping[str, DeviceDeferred | None]
    slack: timedelta
    now: datetime
    _entries: dict[str, Entry] = field(default_factory=dict)
    _last: dict[str, DeviceDeferred] = field(default_factory=dict)

    def entry(self, device_id: str) -> Entry | None:
        return self._entries.get(device_id) or self.devices.get(device_id)

    def last(self, device_id: str) -> DeviceDeferred | None:
        return self._last.get(device_id) or self.deferrals.get(device_id)

    def stage(self, device_id: str, entry: Entry, report: StagingReport) -> list[StagingEvent]:
        wave, status, deadline = entry
        found = staging(self.created, device_id, wave, status, deadline, report,
                        self.last(device_id), self.slack, self.now)
        for event in found:
            if isinstance(event, DeviceStaged):
                self._entries[device_id] = (wave, "staged", event.deadline)
            elif isinstance(event, DeviceDeferred):
                self._last[device_id] = event
                self._entries[device_id] = (wave, "deferred", (self.entry(device_id) or entry)[2])
        return found

    def late(self, device_id: str, entry: Entry, report: StagingReport) -> DeviceFailed | DeviceTimedOut:
        """An outcome that happened after the device's deadline: a staged device missed its
        activation deadline, any other its device timeout."""
        wave, status, _ = entry
        if status in STAGED:
            return DeviceFailed(device_id, wave, not_activated(self.created, self.last(device_id)),
                                report.fact_id, report.observed_at)
        return DeviceTimedOut(device_id, wave, report.fact_id, report.observed_at)
