"""Token buckets for announcements: one per device id and one for the whole process, so neither
one id hammered nor a flood of fresh ids (pending devices created by the dozen) gets through
faster than the buckets refill. A refused announce costs no database work."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class AnnounceLimiter:
    per_device_rate: float
    per_device_burst: float
    global_rate: float
    global_burst: float
    max_tracked: int = 100_000  # least recently used device buckets beyond this are dropped
    monotonic: Callable[[], float] = time.monotonic
    _devices: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)
    _global: TokenBucket | None = None

    def retry_after(self, device_id: str) -> float:
        """0.0: go ahead; otherwise refuse and tell the device to wait this long."""
        now = self.monotonic()
        bucket = self._devices.pop(device_id, None) or TokenBucket(self.per_device_rate,
                                                                   self.per_device_burst)
        self._devices[device_id] = bucket
        while len(self._devices) > self.max_tracked:
            self._devices.popitem(last=False)
        if wait := bucket.take(now):
            return wait
        if self._global is None:
            self._global = TokenBucket(self.global_rate, self.global_burst)
        return self._global.take(now)
