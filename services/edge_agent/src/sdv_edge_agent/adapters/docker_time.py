"""Docker's RFC 3339 timestamps (`2026-11-22T18:32:00.769974310Z`) as integer nanoseconds.

Console offsets of containers are these nanoseconds, so they must survive a round trip exactly;
floats would not. Every console line carries one, so the seconds part is cached: consecutive
lines mostly share it.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from functools import lru_cache


@lru_cache(maxsize=64)
def _whole_seconds(text: str) -> int:
    return calendar.timegm(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timetuple())


def docker_time_ns(text: str) -> int:
    """0 for the engine's "never" (`0001-01-01T00:00:00Z`) and for anything unparsable."""
    text = text.strip()
    if not text or text.startswith("0001-"):
        return 0
    try:
        if text.endswith("Z"):
            whole, _, fraction = text[:-1].partition(".")
            return _whole_seconds(whole) * 1_000_000_000 + int((fraction + "000000000")[:9] or 0)
        # An explicit offset (not what the engine writes, but valid RFC 3339): slower, µs only.
        return int(datetime.fromisoformat(text).timestamp() * 1_000_000) * 1000
    except ValueError:
        return 0
