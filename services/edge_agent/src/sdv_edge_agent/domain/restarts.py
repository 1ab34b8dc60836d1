"""When to restart a crashed app, and when to give up: exponential backoff and crash-loop detection.

Pure: the caller passes the clock reading and the crash history it keeps. Crash times are kept
across agent restarts and reboots (SQLite), so they are wall-clock times: a monotonic clock starts
again at every boot, which would make the crashes of the previous boot look recent. A time after
`now` (a clock set back, or a time kept from another clock) is dropped rather than counted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    base_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 30.0
    # This many crashes within `window_s` is a crash loop: the app is FAILED, not restarted.
    loop_crashes: int = 5
    window_s: float = 120.0


@dataclass(frozen=True)
class Restart:
    delay_s: float
    crashes: tuple[float, ...]  # the history to keep (crash times within the window)


@dataclass(frozen=True)
class CrashLoop:
    crashes: tuple[float, ...]
    reason: str


def after_crash(policy: RestartPolicy, crashes: tuple[float, ...], now: float) -> Restart | CrashLoop:
    """One more crash at `now` (wall clock), given the earlier ones: restart after a delay, or give up."""
    recent = (*(t for t in crashes if 0 <= now - t < policy.window_s), now)
    if len(recent) >= policy.loop_crashes:
        return CrashLoop(recent, f"crash loop: {len(recent)} crashes within {policy.window_s:.0f}s")
    delay = min(policy.max_delay_s, policy.base_delay_s * policy.factor ** (len(recent) - 1))
    return Restart(delay, recent)
