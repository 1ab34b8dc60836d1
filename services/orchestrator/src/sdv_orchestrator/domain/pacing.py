"""How fast a rollout may target devices: a rate per minute (growing by a factor per wave, as AWS
IoT Jobs' exponential rollout does) and a cap on devices in flight (targeted, not yet reported).

A token bucket holding one second's worth of devices (at least one): devices are targeted
evenly over the minute instead of in a burst at its start, and a rollout that waited (a soak,
a closed window) does not make up for lost time. Its state is rebuilt from the rollout's
`DeviceTargeted` times, so a restarted orchestrator paces on where it stopped. Pure.
The `Pacing` settings are part of the contract (sdv_events.schemas.scheduling): events carry them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sdv_events.schemas.scheduling import Pacing

__all__ = ["Bucket", "Pacing", "allowed"]  # Pacing lives in the contract: RolloutCreated carries it


@dataclass
class Bucket:
    """Tokens available at `at`; one token targets one device."""

    tokens: float = 0.0
    at: datetime | None = None

    @staticmethod
    def _capacity(rate: float) -> float:
        return max(1.0, rate / 60.0)

    def _level(self, rate: float, now: datetime) -> float:
        capacity = self._capacity(rate)
        if self.at is None:
            return capacity
        elapsed = max(0.0, (now - self.at).total_seconds())
        return min(capacity, self.tokens + elapsed * rate / 60.0)

    def available(self, rate: float, now: datetime) -> int:
        return math.floor(self._level(rate, now) + 1e-9)

    def take(self, rate: float, now: datetime, n: int = 1) -> None:
        """Record `n` devices targeted at `now` (also when folding history: never refuses)."""
        self.tokens = self._level(rate, now) - n
        self.at = now

    def next_at(self, rate: float, now: datetime) -> datetime:
        """When the next whole token is there (`now` if one is)."""
        missing = 1.0 - self._level(rate, now)
        return now if missing <= 1e-9 else now + timedelta(seconds=missing * 60.0 / rate)


def allowed(pacing: Pacing, wave: int, bucket: Bucket, in_flight: int, now: datetime) -> int:
    """How many more devices may be targeted at `now` (a large number: no limit applies)."""
    room = (pacing.max_in_flight - in_flight) if pacing.max_in_flight is not None else 1 << 30
    rate = pacing.rate(wave)
    if rate is not None:
        room = min(room, bucket.available(rate, now))
    return max(0, room)
