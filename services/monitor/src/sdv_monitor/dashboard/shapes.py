"""What the dashboard's pages show, shaped from the read views: pure functions, no I/O (the
clock comes in as an argument), tested without a server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from sdv_events.schemas.monitor import AuditQuery, RolloutDetail, RolloutDevice, RolloutRow

# What a rollout's device cell says, in words as well as in colour (colour alone tells nothing to
# a screen reader or to a colour-blind operator).
OUTCOME_WORDS = {"planned": "waiting", "targeted": "installing", "staged": "staged",
                 "deferred": "deferred", "held": "held", "succeeded": "succeeded",
                 "failed": "failed", "timed_out": "timed out", "offline": "offline",
                 "skipped": "skipped (offline)", "rolled_back": "rolled back",
                 "rollback_unconfirmed": "rollback unconfirmed"}
OUTCOME_MARKS = {"planned": "·", "targeted": "…", "staged": "⇣", "deferred": "⏸", "held": "⏸",
                 "succeeded": "✓", "failed": "✗", "timed_out": "!",
                 "offline": "○", "skipped": "↷", "rolled_back": "↶", "rollback_unconfirmed": "?"}
# The outcomes a rollout counts (a device offline with a finish time was failed for it).
COUNTED = ("succeeded", "failed", "timed_out", "offline")
AUDIT_FIELDS = ("rollout", "device", "package", "stream", "correlation", "actor", "type", "since", "until",
                "after")


@dataclass(frozen=True)
class WaveView:
    number: int  # from 1, as people count
    size: int
    state: str  # waiting | running | completed | aborted
    succeeded: int
    failed: int
    started_at: datetime | None
    completed_at: datetime | None
    took_s: float | None  # started → completed (or → now while running)
    cells: list[RolloutDevice] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed


def waves_of(detail: RolloutDetail, now: datetime) -> list[WaveView]:
    """Every wave of the plan, the ones not started yet included, each with its devices."""
    started = {w.wave: w for w in detail.waves}
    cells: dict[int, list[RolloutDevice]] = {}
    for device in detail.devices:
        cells.setdefault(device.wave, []).append(device)
    count = max([detail.rollout.waves, len(detail.waves), *(w + 1 for w in cells)], default=0)
    views = []
    for index in range(count):
        wave = started.get(index)
        members = cells.get(index, [])
        if wave is None:
            views.append(WaveView(index + 1, len(members), "waiting", 0, 0, None, None, None, members))
            continue
        end = wave.completed_at or (None if detail.rollout.ended_at else now)
        took = (end - wave.started_at).total_seconds() if wave.started_at and end else None
        views.append(WaveView(index + 1, wave.size or len(members), wave.state, wave.succeeded, wave.failed,
                              wave.started_at, wave.completed_at, took, members))
    return views


def rollout_took_s(rollout: RolloutRow, now: datetime) -> float:
    return float(((rollout.ended_at or now) - rollout.created_at).total_seconds())


def progress_series(detail: RolloutDetail, now: datetime) -> dict[str, Any]:
    """The rollout's outcomes over time, for its chart: seconds since creation, and how many
    devices had succeeded and failed by then (one point per finished device); with the axes'
    ends (the rollout's duration so far, its number of devices)."""
    start = detail.rollout.created_at
    finished = sorted((d.finished_at, d.status) for d in detail.devices
                      if d.finished_at is not None and d.status in COUNTED)
    series: dict[str, list[float]] = {"t": [0.0], "succeeded": [0], "failed": [0]}
    ok = bad = 0
    for at, status in finished:
        ok, bad = (ok + 1, bad) if status == "succeeded" else (ok, bad + 1)
        series["t"].append(round((at - start).total_seconds(), 3))
        series["succeeded"].append(ok)
        series["failed"].append(bad)
    return {**series, "until": max(1.0, round(rollout_took_s(detail.rollout, now), 3)),
            "devices": max(1, detail.rollout.devices)}


def duration(seconds: float | None) -> str:
    """`4.2 s`, `3 min 5 s`, `2 h 10 min`."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def percent(share: float) -> str:
    return f"{share * 100:.4g} %"


def audit_query(params: Mapping[str, str]) -> tuple[AuditQuery | None, dict[str, str], str | None]:
    """The audit search form's fields as a query: (query, the fields as entered, why not).
    Empty fields are no filter; a time without a zone is UTC (the form's inputs have none)."""
    entered = {name: params.get(name, "").strip() for name in AUDIT_FIELDS}
    wanted: dict[str, str] = {k: v for k, v in entered.items() if v}
    for name in ("since", "until"):
        if name in wanted and not _has_zone(wanted[name]):
            wanted[name] += "Z"
    try:
        return msgspec.convert(wanted, AuditQuery, strict=False), entered, None
    except msgspec.ValidationError as exc:
        return None, entered, str(exc)


def _has_zone(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return True  # not a time at all: the query's own validation says so
