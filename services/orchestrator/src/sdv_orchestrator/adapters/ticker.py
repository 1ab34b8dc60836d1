"""The ticker: timeouts and soak times advance on the clock, not only on reports.

Each round first asks how far devices' facts have been handled (the watermark, see
facts_watermark.py): deadlines are judged against that, never against a clock the facts
consumer may lag behind. Then every active rollout is ticked, each on its own: one rollout whose
tick fails (a newer writer's event it cannot fold, a database blip) is logged and counted but
does not stop the others. The ticker's health turns red while a rollout keeps failing, naming it
and why, or while the watermark cannot be read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from sdv_events.aio import sleep_or_stop
from sdv_events.supervision import Status

log = structlog.get_logger("sdv.orchestrator.ticker")


Watermark = Callable[[], Awaitable[datetime | None]]


class Ticker:
    def __init__(
        self,
        active: Callable[[], Awaitable[list[str]]],
        tick: Callable[[str, datetime | None], Awaitable[None]],
        *,
        watermark: Watermark,
        every_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        watermark_status: Callable[[], Status] | None = None,
    ) -> None:
        self.active = active
        self.tick = tick
        self.watermark = watermark
        self.watermark_status = watermark_status
        self.every_s = every_s
        self.monotonic = monotonic
        self.failing: dict[str, str] = {}  # rollout id → its last error, while it keeps failing
        self.errors = 0
        self.last_round: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.round()  # listing the active rollouts failing escapes: the supervisor restarts
            await sleep_or_stop(stop, self.every_s)

    async def round(self) -> None:
        # Before listing: a fact handled after this sample is at worst not counted yet.
        facts_until = await self.watermark()
        active = await self.active()
        for rollout_id in active:
            try:
                await self.tick(rollout_id, facts_until)
            except Exception as exc:
                self.errors += 1
                self.failing[rollout_id] = f"{type(exc).__name__}: {exc}"[:300]
                log.error("tick_failed", rollout_id=rollout_id, error=self.failing[rollout_id])
            else:
                self.failing.pop(rollout_id, None)
        for gone in set(self.failing) - set(active):
            del self.failing[gone]
        self.last_round = self.monotonic()

    async def status(self) -> Status:
        detail: dict[str, int | float | str] = {"errors": self.errors, "failing": len(self.failing)}
        if self.last_round is not None:
            detail["last_round_age_s"] = round(self.monotonic() - self.last_round, 3)
        if self.failing:
            rollout_id, error = next(iter(self.failing.items()))
            more = f" (and {len(self.failing) - 1} more)" if len(self.failing) > 1 else ""
            return Status(False, f"rollout {rollout_id} cannot be ticked: {error}{more}", detail)
        if self.watermark_status is not None:
            facts = self.watermark_status()
            detail |= facts.detail
            if not facts.healthy:
                return Status(False, f"{facts.reason}: no device is timed out meanwhile", detail)
        return Status(True, "", detail)
