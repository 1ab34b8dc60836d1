"""Presence from heartbeats, without events per heartbeat: only transitions matter.

`PresenceTracker` keeps, per device, when its last heartbeat arrived (a monotonic reading the
caller passes in). `heard` says whether a heartbeat makes a device come online; `silent` lists
the devices whose silence passed the limit, which then count as offline until heard again.
Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PresenceTracker:
    silence_s: float
    last_heard: dict[str, float] = field(default_factory=dict)  # online devices only

    def heard(self, device_id: str, now: float) -> bool:
        """Record a heartbeat; True when the device was not online before (a transition)."""
        came_online = device_id not in self.last_heard
        self.last_heard[device_id] = now
        return came_online

    def assume_online(self, device_id: str, now: float) -> None:
        """A device the event store says is online (after a restart): give it a full silence
        period to be heard before it counts as offline."""
        self.last_heard.setdefault(device_id, now)

    def silent(self, now: float) -> list[tuple[str, float]]:
        """Devices silent for longer than `silence_s`, with their last heartbeat reading; they
        leave the tracker (their next heartbeat is a transition again)."""
        deadline = now - self.silence_s
        gone = [(d, t) for d, t in self.last_heard.items() if t < deadline]
        for device_id, _ in gone:
            del self.last_heard[device_id]
        return gone

    def forget(self, device_id: str) -> None:
        self.last_heard.pop(device_id, None)
