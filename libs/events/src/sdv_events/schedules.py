"""Checking a rollout's `Schedule` (schemas/scheduling.py) where it enters: the CLI before it
sends, the orchestrator's deciders before anything is stored. Each problem is a typed
`DomainError` (`InvalidWindow`, `InvalidGate`, `InvalidLabel`, `InvalidSchedule`) whose message
names the option and what is wrong. Pure.

A label window is written `zone=eu: Mon-Fri 22:00-05:00 Europe/Berlin` on the command line: a
label (key=value), a colon, a window; the same label given twice collects both windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sdv_events.errors import DomainError
from sdv_events.gates import parse_gates
from sdv_events.labels import check_key, check_value
from sdv_events.schemas.scheduling import MAX_LABEL_WINDOWS, LabelWindow, Schedule
from sdv_events.windows import InvalidWindow, parse_window, parse_windows

MAX_ACTIVATION_TIMEOUT_S = 90 * 86_400.0  # a quarter: longer is a rollout nobody watches


class InvalidSchedule(DomainError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_request")


def parse_label(text: str) -> tuple[str, str]:
    """`zone=eu` → ("zone", "eu")."""
    key, eq, value = text.strip().partition("=")
    if not eq:
        raise InvalidSchedule(f"label window label {text!r}: expected key=value, e.g. zone=eu")
    return check_key(key.strip()), check_value(key.strip(), value.strip())


def parse_label_window(text: str) -> LabelWindow:
    """`zone=eu: Mon-Fri 22:00-05:00 Europe/Berlin` → LabelWindow("zone=eu", [window])."""
    label, colon, window = text.partition(":")
    if not colon or not window.strip() or len(label.split()) != 1:
        raise InvalidSchedule(
            f"label window {text!r}: expected `<key>=<value>: <window>`, "
            "e.g. `zone=eu: Mon-Fri 22:00-05:00 Europe/Berlin`")
    key, value = parse_label(label)
    return LabelWindow(f"{key}={value}", [parse_window(window.strip()).text])


def merge_label_windows(entries: Iterable[LabelWindow]) -> list[LabelWindow]:
    """Entries of the same label as one, in the order labels first appear."""
    merged: dict[str, list[str]] = {}
    for entry in entries:
        merged.setdefault(entry.label, []).extend(w for w in entry.windows
                                                  if w not in merged.get(entry.label, []))
    return [LabelWindow(label, windows) for label, windows in merged.items()]


def label_mask(schedule: Schedule, labels: Mapping[str, str]) -> int:
    """Bit i set: the device carries the label of `schedule.label_windows[i]`."""
    mask = 0
    for i, entry in enumerate(schedule.label_windows):
        key, _, value = entry.label.partition("=")
        if labels.get(key) == value:
            mask |= 1 << i
    return mask


def check_schedule(schedule: Schedule) -> Schedule:
    """The schedule, or the first thing wrong with it as a typed error."""
    parse_windows(schedule.windows)
    if len(schedule.label_windows) > MAX_LABEL_WINDOWS:
        raise InvalidSchedule(f"at most {MAX_LABEL_WINDOWS} label windows")
    seen: set[str] = set()
    for entry in schedule.label_windows:
        parse_label(entry.label)
        if entry.label in seen:
            raise InvalidSchedule(f"label window {entry.label!r} given twice: list its windows once")
        seen.add(entry.label)
        if not entry.windows:
            raise InvalidWindow(entry.label, "a label window needs at least one window")
        parse_windows(entry.windows)
    schedule.pacing.check()
    if schedule.start_at is not None and schedule.start_at.tzinfo is None:
        raise InvalidSchedule(
            f"start at {schedule.start_at.isoformat()}: give a time zone offset (e.g. +01:00 or Z)")
    parse_gates(schedule.gates)
    if not 0 < schedule.activation_timeout_s <= MAX_ACTIVATION_TIMEOUT_S:
        raise InvalidSchedule(
            f"activation timeout {schedule.activation_timeout_s:g} s: must be > 0 and at most "
            f"{MAX_ACTIVATION_TIMEOUT_S:.0f} s (90 days)")
    return schedule


def parse_start_at(text: str) -> datetime:
    """ISO-8601 with an offset or `Z` (`2026-12-01T22:00:00+01:00`); a time without one is
    refused rather than guessed."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidSchedule(
            f"start at {text!r}: not an ISO-8601 time (e.g. 2026-12-01T22:00:00+01:00)") from None
    if at.tzinfo is None:
        raise InvalidSchedule(
            f"start at {text!r}: give a time zone offset (e.g. 2026-12-01T22:00:00+01:00 or …Z)")
    return at
