"""Sends heartbeats (`sdv_events.schemas.heartbeat`) on `sdv.hb.<device_id>`.

Metrics per app (cpu %, rss, restarts, uptime) come from the agent's one-second usage sampling;
device metrics (cpu, memory, disk of the data directory) from psutil. No heartbeat is queued while
disconnected: a stale heartbeat delivered late would lie about the present.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psutil
import structlog

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_edge_agent.adapters.link import NatsLink
from sdv_events.schemas.heartbeat import DeviceMetrics, Heartbeat
from sdv_events.subjects import heartbeat_subject

log = structlog.get_logger("sdv.agent.heartbeat")


def device_metrics(disk_path: Path) -> DeviceMetrics:
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage(str(disk_path))
    return DeviceMetrics(
        cpu_pct=psutil.cpu_percent(None), mem_pct=mem.percent, mem_used_bytes=mem.used,
        mem_total_bytes=mem.total, disk_pct=disk.percent, disk_free_bytes=disk.free,
    )


class HeartbeatSender:
    def __init__(self, link: NatsLink, device_id: str, interval_s: float,
                 build: Callable[[int], Heartbeat], *, first_after_s: float | None = None) -> None:
        self.link = link
        self.subject = heartbeat_subject(device_id)
        self.interval_s = interval_s
        self.build = build
        # Default: one interval. Many agents of one process (simulation) spread theirs out.
        self.first_after_s = interval_s if first_after_s is None else first_after_s
        self.seq = 0
        self._soon = asyncio.Event()

    async def beat_soon(self) -> None:
        """The next heartbeat now, not at its time (the link just came up: the device is online
        as soon as it is connected, not one interval later); the period restarts from it."""
        self._soon.set()

    async def run(self) -> None:
        psutil.cpu_percent(None)  # the first reading primes the counter
        next_at = time.monotonic() + self.first_after_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), max(0.0, next_at - time.monotonic()))
            if self._soon.is_set():
                self._soon.clear()
                next_at = time.monotonic() + self.interval_s
            else:
                next_at += self.interval_s
            if not self.link.is_up or self.link.nc is None:
                continue
            self.seq += 1
            try:
                await self.link.nc.publish(self.subject, msgspec.json.encode(self.build(self.seq)))
            except Exception as exc:
                reraise_if_cancelling(exc)
                log.info("heartbeat_failed", reason=f"{type(exc).__name__}: {exc}")


def now_utc() -> datetime:
    return datetime.now(UTC)
