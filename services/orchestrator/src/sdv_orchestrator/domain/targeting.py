"""Which planned devices of the current wave a rollout targets now — or why it waits.

A wave's devices are targeted as its schedule allows, not all as it starts:
- none before the rollout's start time (`RolloutWaiting("start_at", until=start)`);
- a device only inside its maintenance windows: those of the label windows it matches (the
  plan's `DevicesWindowed` chunks, a bit mask per device), else the rollout-wide ones; no
  windows: any time. When every device left is outside its windows the rollout waits
  (`RolloutWaiting("window", until=<next opening among them>)`);
- no more than the pacing lets through (domain/pacing.py: the rate of the wave, max in flight).
A `RolloutWaiting` is written when waiting begins (or its reason or end changes), not on every
tick; the next `DeviceTargeted` ends it. Devices are taken in plan order (across window groups).

Pure: `now` comes in; the queue and the token bucket are rebuilt from the rollout's events
(`WaveStarted`, `DeviceTargeted` with its time), so a restarted orchestrator goes on where it was.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sdv_events.schedules import label_mask
from sdv_events.schemas.rollouts import DeviceTargeted
from sdv_events.schemas.scheduling import RolloutWaiting, Schedule, WaitReason, WindowedDevice
from sdv_events.windows import Window, is_open, next_opening, parse_windows
from sdv_orchestrator.domain.pacing import Bucket, allowed

TargetingEvent = DeviceTargeted | RolloutWaiting


@dataclass
class WaveQueue:
    """The current wave's devices not targeted yet: per window group (label mask), each a list
    of (plan position, device) consumed from the front."""

    by_group: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    pos: dict[int, int] = field(default_factory=dict)
    left: int = 0

    @classmethod
    def of(cls, devices: Sequence[str], groups: Mapping[str, int],
           targeted: Container[str]) -> WaveQueue:
        queue = cls()
        for position, device_id in enumerate(devices):
            if device_id not in targeted:
                queue.by_group.setdefault(groups.get(device_id, 0), []).append((position, device_id))
                queue.left += 1
        queue.pos = dict.fromkeys(queue.by_group, 0)
        return queue

    def groups_left(self) -> list[int]:
        return [g for g, items in self.by_group.items() if self.pos[g] < len(items)]

    def _rest(self, group: int) -> Iterator[tuple[int, str]]:
        return itertools.islice(self.by_group[group], self.pos[group], None)

    def peek(self, groups: Sequence[int], n: int) -> list[str]:
        """The first `n` devices left in these groups, in plan order (nothing is taken)."""
        merged = heapq.merge(*(self._rest(g) for g in groups))
        return [device_id for _, device_id in itertools.islice(merged, n)]

    def take(self, device_id: str, group: int) -> None:
        items = self.by_group.get(group)
        if not items:
            return
        at = self.pos[group]
        if at < len(items) and items[at][1] == device_id:
            self.pos[group] = at + 1
        else:  # not at the front (never decided so; kept right all the same)
            index = next((i for i in range(at, len(items)) if items[i][1] == device_id), None)
            if index is None:
                return
            items.pop(index)
        self.left -= 1


@dataclass
class Targeting:
    """What targeting needs of a rollout's history: its schedule (windows parsed once), the
    devices label windows apply to, the current wave's queue, the token bucket, and whether it
    is waiting."""

    schedule: Schedule = field(default_factory=Schedule)
    groups: dict[str, int] = field(default_factory=dict)  # device → label mask (absent: 0)
    queue: WaveQueue = field(default_factory=WaveQueue)
    bucket: Bucket = field(default_factory=Bucket)
    waiting: RolloutWaiting | None = None
    _windows: dict[int, list[Window]] = field(default_factory=dict)

    def windows_of(self, group: int) -> list[Window]:
        """The windows of a group: its label windows (any of them), or the rollout's own."""
        found = self._windows.get(group)
        if found is None:
            if group == 0:
                texts = self.schedule.windows
            else:
                texts = [w for i, entry in enumerate(self.schedule.label_windows)
                         if group >> i & 1 for w in entry.windows]
            found = self._windows[group] = parse_windows(list(dict.fromkeys(texts)))
        return found


# --- planning ------------------------------------------------------------------------------------
def windowed_devices(schedule: Schedule, device_ids: Sequence[str],
                     labels: Mapping[str, Mapping[str, str]]) -> list[WindowedDevice]:
    """The planned devices label windows apply to, with their masks (for `DevicesWindowed`)."""
    if not schedule.label_windows:
        return []
    found = []
    for device_id in device_ids:
        mask = label_mask(schedule, labels.get(device_id, {}))
        if mask:
            found.append(WindowedDevice(device_id, mask))
    return found


# --- decide --------------------------------------------------------------------------------------
def target(t: Targeting, queue: WaveQueue, wave: int, in_flight: int, device_s: float,
           now: datetime) -> list[TargetingEvent]:
    """Devices of wave `wave` to target at `now` (`queue`: its devices not targeted yet;
    `in_flight`: its devices targeted without an outcome), or the start of a wait."""
    if queue.left <= 0:
        return []
    schedule = t.schedule
    if schedule.start_at is not None and now < schedule.start_at:
        return _wait(t, "start_at", schedule.start_at, wave, now)
    left = queue.groups_left()
    opened = [g for g in left if is_open(t.windows_of(g), now)]
    if not opened:
        openings = [o for g in left if (o := next_opening(t.windows_of(g), now)) is not None]
        return _wait(t, "window", min(openings) if openings else None, wave, now)
    n = allowed(schedule.pacing, wave, t.bucket, in_flight, now)
    if n <= 0:
        return []
    deadline = now + timedelta(seconds=device_s)
    return [DeviceTargeted(device_id, wave, deadline, now) for device_id in queue.peek(opened, n)]


def _wait(t: Targeting, reason: WaitReason, until: datetime | None, wave: int,
          now: datetime) -> list[TargetingEvent]:
    if t.waiting is not None and (t.waiting.reason, t.waiting.until, t.waiting.wave) == (reason, until, wave):
        return []
    return [RolloutWaiting(reason=reason, until=until, wave=wave, at=now)]


# --- evolve (in place, as the rollout's state) ---------------------------------------------------
def on_wave_started(t: Targeting, devices: Sequence[str], targeted: Container[str]) -> None:
    t.queue = WaveQueue.of(devices, t.groups, targeted)


def on_targeted(t: Targeting, event: DeviceTargeted) -> None:
    t.queue.take(event.device_id, t.groups.get(event.device_id, 0))
    t.waiting = None
    rate = t.schedule.pacing.rate(event.wave)
    if event.at is not None and rate is not None:
        t.bucket.take(rate, event.at)


def waiting_message(waiting: RolloutWaiting) -> str:
    when = "" if waiting.until is None else waiting.until.isoformat(timespec="minutes")
    if waiting.reason == "start_at":
        return f"waiting for its start time ({when})"
    return "outside its maintenance windows" + (f"; next opening {when}" if when else "")
