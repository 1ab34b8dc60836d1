"""The warning rule, kept apart from I/O so it is easy to test."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpeedRule:
    limit_kmh: float
    hysteresis_kmh: float = 2.0
    _over: bool = field(default=False, init=False)

    def check(self, speed: float | None) -> str | None:
        """A warning when the limit is first crossed, an all-clear when back under it."""
        if speed is None:
            return None
        if not self._over and speed > self.limit_kmh:
            self._over = True
            return f"WARNING speed {speed:.1f} km/h over limit {self.limit_kmh:.0f} km/h"
        if self._over and speed < self.limit_kmh - self.hysteresis_kmh:
            self._over = False
            return f"OK speed {speed:.1f} km/h back under {self.limit_kmh:.0f} km/h"
        return None
