"""Maintenance windows: when devices may be targeted or switched to a new version.

A window is written the way an operator says it — `Mon-Fri 22:00-05:00 Europe/Berlin`,
`Sat,Sun 00:00-24:00 UTC`, `daily 02:00-04:00 America/New_York` — and kept as that text in
events and policies. Days name the day a window *opens*; an end at or before the start runs past
midnight. Times are wall-clock times of the window's time zone, so a window keeps its local
hours across daylight-saving changes (an opening inside a skipped hour opens when the clock
jumps). Pure: `is_open` and `next_opening` take the instant to judge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from sdv_events.errors import DomainError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WINDOWS = 16
_WINDOW_RE = re.compile(r"^\s*(\S+)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s+(\S+)\s*$")


class InvalidWindow(DomainError):
    def __init__(self, text: str, why: str) -> None:
        super().__init__(f"maintenance window {text!r}: {why}", code="invalid_request")


class Window(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    days: frozenset[int]  # 0 = Monday, the days the window opens
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight; <= start: the next day
    tz: str

    @property
    def length(self) -> timedelta:
        minutes = self.end - self.start if self.end > self.start else 24 * 60 - self.start + self.end
        return timedelta(minutes=minutes)


def _days(text: str, spec: str) -> frozenset[int]:
    spec = spec.lower()
    if spec in ("daily", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        try:
            a = DAYS.index(first[:3])
            b = DAYS.index(last[:3]) if last else a
        except ValueError:
            raise InvalidWindow(
                text, f"{part!r} is not a day (mon … sun, a range mon-fri, a list sat,sun, or daily)"
            ) from None
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _minutes(text: str, hours: str, minutes: str, *, end: bool) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and (m or not end)):
        raise InvalidWindow(text, f"{hours}:{minutes} is not a time of day")
    return h * 60 + m


def parse_window(text: str) -> Window:
    if len(text) > 120:
        raise InvalidWindow(text[:40] + "…", "longer than 120 characters")
    match = _WINDOW_RE.match(text)
    if match is None:
        raise InvalidWindow(
            text, "expected `<days> HH:MM-HH:MM <time zone>`, e.g. `Mon-Fri 22:00-05:00 Europe/Berlin`"
        )
    days, h1, m1, h2, m2, tz = match.groups()
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidWindow(text, f"{tz!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)") from None
    start = _minutes(text, h1, m1, end=False)
    end = _minutes(text, h2, m2, end=True) % (24 * 60)
    if start == end and (h2, m2) != ("24", "00"):
        raise InvalidWindow(text, "opens and closes at the same time")
    return Window(text=" ".join(text.split()), days=_days(text, days), start=start, end=end, tz=tz)


def parse_windows(texts: Sequence[str]) -> list[Window]:
    if len(texts) > MAX_WINDOWS:
        raise InvalidWindow(texts[0], f"at most {MAX_WINDOWS} windows")
    return [parse_window(t) for t in texts]


def _openings(window: Window, around: datetime) -> list[tuple[datetime, datetime]]:
    """The window's (open, close) instants whose opening day is near `around` (local days)."""
    zone = ZoneInfo(window.tz)
    local = around.astimezone(zone).date()
    spans = []
    for delta in range(-1, 9):
        day = local + timedelta(days=delta)
        if day.weekday() not in window.days:
            continue
        midnight = datetime.combine(day, time(0), zone)
        # Wall-clock arithmetic (same zone); a time skipped by a DST jump does not exist, and
        # normalising through UTC moves it past the jump.
        opens = (midnight + timedelta(minutes=window.start)).astimezone(UTC)
        closes = (midnight + timedelta(minutes=window.start) + window.length).astimezone(UTC)
        spans.append((opens, closes))
    return spans


def is_open(windows: Sequence[Window], at: datetime) -> bool:
    """No windows: always open."""
    return not windows or any(o <= at < c for w in windows for o, c in _openings(w, at))


def next_opening(windows: Sequence[Window], at: datetime) -> datetime | None:
    """When the next window opens after `at` (`at` itself if one is open; None if none given)."""
    if not windows:
        return None
    if is_open(windows, at):
        return at
    return min(o for w in windows for o, _ in _openings(w, at) if o > at)


def closes_at(windows: Sequence[Window], at: datetime) -> datetime | None:
    """When the window open at `at` closes (the latest close among those open)."""
    ends = [c for w in windows for o, c in _openings(w, at) if o <= at < c]
    return max(ends) if ends else None
