"""Heartbeats on `sdv.hb.<device_id>` (core NATS, fire-and-forget, every few seconds): the
registry turns their gaps into presence events, the monitor reads the metrics they carry.

Unknown fields are ignored by readers, so an agent may add metrics without breaking them;
`schema_version` changes only when a field changes meaning.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class AppMetrics(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    version: str
    healthy: bool
    restarts: int
    pid: int | None = None
    cpu_pct: float | None = None
    rss_bytes: int | None = None
    uptime_s: float | None = None


class DeviceMetrics(msgspec.Struct, frozen=True, kw_only=True):
    cpu_pct: float
    mem_pct: float
    mem_used_bytes: int
    mem_total_bytes: int
    disk_pct: float
    disk_free_bytes: int


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    schema_version: int = 1
    device_id: str
    seq: int
    sent_at: datetime
    agent_version: str
    desired_revision: int
    apps: dict[str, AppMetrics]
    device: DeviceMetrics
    databroker: str | None = None  # the KUKSA databroker the agent found, host:port
    limits: str = ""  # how each runtime enforces memory/cpu limits on this device
