"""Heartbeats → presence events. Heartbeats arrive on core NATS `sdv.hb.<device_id>` (no event
each); the tracker notes them in memory and only transitions become commands: the first
heartbeat of a device not online → `MarkOnline`, a silence longer than the limit →
`MarkOffline`. The decider drops transitions that change nothing (a device not accepted, one
already online), so replicas that all track every heartbeat write each transition once.

Commands go through a bounded queue served by a few workers, so a burst of devices coming
online never blocks the subscription that reads heartbeats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog

from sdv_events.aio import sleep_or_stop
from sdv_registry.domain.device import DeviceCommand, MarkOffline, MarkOnline
from sdv_registry.domain.presence import PresenceTracker

log = structlog.get_logger("sdv.registry.heartbeats")
HEARTBEAT_PREFIX = "sdv.hb."


def wall_clock() -> datetime:
    return datetime.now(UTC)


class PresenceMonitor:
    def __init__(
        self,
        run_command: Callable[[str, DeviceCommand], Awaitable[object]],
        *,
        silence_s: float,
        workers: int = 8,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = wall_clock,
    ) -> None:
        self.run_command = run_command
        self.tracker = PresenceTracker(silence_s)
        self.monotonic = monotonic
        self.clock = clock
        self.heartbeats = 0
        self.transitions = 0
        self._queue: asyncio.Queue[DeviceCommand] = asyncio.Queue(maxsize=100_000)
        self._workers = workers

    def heard(self, subject: str) -> None:
        """One heartbeat (the subscription callback: no await, no I/O)."""
        device_id = subject[len(HEARTBEAT_PREFIX):]
        self.heartbeats += 1
        if not device_id or "." in device_id:
            return
        if self.tracker.heard(device_id, self.monotonic()):
            self._enqueue(MarkOnline(device_id, self.clock()))

    def restore(self, online: list[str]) -> None:
        now = self.monotonic()
        for device_id in online:
            self.tracker.assume_online(device_id, now)

    def sweep(self) -> int:
        now_mono, now = self.monotonic(), self.clock()
        gone = self.tracker.silent(now_mono)
        for device_id, heard_at in gone:
            last_seen = now - timedelta(seconds=now_mono - heard_at)
            self._enqueue(MarkOffline(device_id, last_seen, self.tracker.silence_s))
        return len(gone)

    def _enqueue(self, command: DeviceCommand) -> None:
        try:
            self._queue.put_nowait(command)
        except asyncio.QueueFull:  # the tracker re-detects it: next heartbeat / next sweep
            self.tracker.forget(command.device_id)
            log.warning("presence_queue_full", device_id=command.device_id)

    async def _work(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                command = await asyncio.wait_for(self._queue.get(), 0.25)
            except TimeoutError:
                continue
            try:
                await self.run_command(command.device_id, command)
                self.transitions += 1
            except Exception as exc:  # keep tracking; a lost transition is re-detected
                self.tracker.forget(command.device_id)
                log.warning("presence_command_failed", device_id=command.device_id, error=repr(exc))

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        interval = max(0.05, min(1.0, self.tracker.silence_s / 4))
        while not stop.is_set():
            self.sweep()
            await sleep_or_stop(stop, interval)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self._sweep_loop(stop), *(self._work(stop) for _ in range(self._workers)))
