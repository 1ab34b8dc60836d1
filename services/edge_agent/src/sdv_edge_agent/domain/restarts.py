"""When to restart a crashed app, and when to give up: exponential backoff and crash-loop detection.

Pure: the caller passes the clock reading and the crash history it keeps.
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
    """One more crash at `now`, given the earlier ones: restart after a delay, or give up."""
    recent = (*(t for t in crashes if now - t < policy.window_s), now)
    if len(recent) >= policy.loop_crashes:
        return CrashLoop(recent, f"crash loop: {len(recent)} crashes within {policy.window_s:.0f}s")
    delay = min(policy.max_delay_s, policy.base_delay_s * policy.factor ** (len(recent) - 1))
    return Restart(delay, recent)
