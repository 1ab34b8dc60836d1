"""A rollout plan as bounded events: a `RolloutPlanned` header, then `PreviousPackages`,
`DevicesPlanned`, `DevicesOffline`, `DevicesExcluded` and `DevicesWindowed` chunks, none over
`CHUNK_BYTES` of encoded body whatever the fleet size (a single entry larger than that — a huge package
description — is a chunk of its own: bounded by the package, not the fleet).

Pure. Also expands a version 1 plan (`RolloutPlannedV1`, every device inline) into the same
events, so the decider and the read models fold old and new histories with one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import msgspec

from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DevicesExcluded,
    DevicesOffline,
    DevicesPlanned,
    ExcludedDevice,
    OfflineDevice,
    PlannedDevice,
    PreviousPackages,
    RolloutPlanned,
    RolloutPlannedV1,
)
from sdv_events.schemas.scheduling import DevicesWindowed, WindowedDevice

CHUNK_BYTES = 32 * 1024  # encoded entries per chunk event (its body is this plus a few bytes)
CHUNK_ENTRIES = 1000

PlanEvent = (RolloutPlanned | PreviousPackages | DevicesPlanned | DevicesOffline | DevicesExcluded
             | DevicesWindowed)
T = TypeVar("T")
_enc = msgspec.json.Encoder()


def chunks(items: Iterable[T], *, budget: int | None = None,
           max_entries: int | None = None) -> list[list[T]]:
    """Consecutive runs of `items` whose encoded sizes (plus a comma each) fit `budget`
    (default CHUNK_BYTES), at most `max_entries` (default CHUNK_ENTRIES) each."""
    budget = CHUNK_BYTES if budget is None else budget
    max_entries = CHUNK_ENTRIES if max_entries is None else max_entries
    out: list[list[T]] = []
    current: list[T] = []
    used = 0
    for item in items:
        size = len(_enc.encode(item)) + 1
        if current and (used + size > budget or len(current) >= max_entries):
            out.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    if current:
        out.append(current)
    return out


def plan_events(waves: Sequence[Sequence[str]], excluded: Mapping[str, str],
                previous: Mapping[str, int], packages: Sequence[PackageInfo],
                now: datetime, offline: Sequence[str] = (),
                windowed: Sequence[WindowedDevice] = ()) -> list[PlanEvent]:
    """The plan's events. `previous`: device → index in `packages` (absent: not installed);
    only packages some planned device points to are written, renumbered in order of use.
    `offline`: planned devices offline when planned; `windowed`: planned devices that label
    windows apply to."""
    table: dict[int, int] = {}  # index in `packages` → index in the written table
    planned: list[PlannedDevice] = []
    away = set(offline)
    offline_rows: list[OfflineDevice] = []
    for index, wave in enumerate(waves):
        for device_id in wave:
            ref = previous.get(device_id)
            if ref is not None:
                ref = table.setdefault(ref, len(table))
            planned.append(PlannedDevice(device_id, index, ref))
            if device_id in away:
                offline_rows.append(OfflineDevice(device_id, index))
    used = [packages[i] for i in table]  # dicts keep insertion order: the written numbering
    events: list[PlanEvent] = [RolloutPlanned(
        devices=len(planned), waves=len(waves), excluded=len(excluded),
        previous_packages=len(used), planned_at=now, offline=len(offline_rows))]
    first = 0
    for part in chunks(used):
        events.append(PreviousPackages(first, part))
        first += len(part)
    events += [DevicesPlanned(n, part) for n, part in enumerate(chunks(planned))]
    events += [DevicesOffline(n, part) for n, part in enumerate(chunks(offline_rows))]
    excluded_rows = (ExcludedDevice(d, why) for d, why in excluded.items())
    events += [DevicesExcluded(n, part) for n, part in enumerate(chunks(excluded_rows))]
    events += [DevicesWindowed(n, part) for n, part in enumerate(chunks(windowed))]
    return events


def expand_v1(plan: RolloutPlannedV1) -> list[PlanEvent]:
    """A version 1 plan as the events version 2 writes for it."""
    packages: list[PackageInfo] = []
    by_encoding: dict[bytes, int] = {}
    previous: dict[str, int] = {}
    for p in plan.previous:
        if p.package is not None:
            key = _enc.encode(p.package)
            previous[p.device_id] = by_encoding.setdefault(key, len(packages))
            if by_encoding[key] == len(packages):
                packages.append(p.package)
    return plan_events(plan.waves, plan.excluded, previous, packages, plan.planned_at)


def distinct_packages(rows: Iterable[tuple[str, bytes]],
                      decode: Callable[[bytes], PackageInfo]) -> tuple[list[PackageInfo], dict[str, int]]:
    """(device id, encoded package) rows → (distinct packages, device → index): each distinct
    encoding decoded once."""
    packages: list[PackageInfo] = []
    by_encoding: dict[bytes, int] = {}
    previous: dict[str, int] = {}
    for device_id, raw in rows:
        index = by_encoding.get(raw)
        if index is None:
            index = by_encoding[raw] = len(packages)
            packages.append(decode(raw))
        previous[device_id] = index
    return packages, previous
