"""The dashboard's change feed (`/ui/changes`): the read model's own notices (PostgreSQL
notifications the projection sends from its transactions, delivered at their commit:
projections/notices.py), fanned out to the pages whose filter matches. A page that fetches its
live part on a notice finds what the notice is about, whichever replica applied it.

While the listening connection is away, nothing is heard: each time it is back, every page is
told that anything may have changed (what was committed meanwhile had no notice it could hear).
"""

from __future__ import annotations

import asyncio
import itertools
import random

import asyncpg
import structlog

from sdv_events.aio import sleep_or_stop, wait_any
from sdv_events.processing.failures import cause, classify
from sdv_events.store.postgres import pooled_session
from sdv_events.supervision import Status
from sdv_monitor.adapters.live import ANYTHING, Fanout, LiveEvent
from sdv_monitor.projections.notices import Entry, channel, entries_of

log = structlog.get_logger("sdv.monitor.view_changes")


class ViewChanges(Fanout):
    def __init__(self, pool: asyncpg.Pool, schema: str, *, client_queue: int = 1_000,
                 retry_max_s: float = 5.0) -> None:
        # Pages do not resume from an id (they fetch again on every connect): no buffer to keep.
        super().__init__(buffer=1, client_queue=client_queue)
        self.pool = pool
        self.channel = channel(schema)
        self.retry_max_s = retry_max_s
        self.notices = 0
        self.listening = False
        self.last_error: str | None = None
        self._seq = itertools.count(1)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop`; a lost connection is waited out (health says so), not fatal."""
        failures = 0
        while not stop.is_set():
            try:
                await self._listen(stop)
                failures = 0
            except Exception as exc:
                if classify(exc) != "transient":
                    raise
                failures += 1
                self.last_error = cause(exc)
                delay = min(self.retry_max_s, 0.2 * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
                log.warning("view_changes_not_listening", channel=self.channel, error=self.last_error,
                            retry_in_s=round(delay, 2))
                await sleep_or_stop(stop, delay)

    async def _listen(self, stop: asyncio.Event) -> None:
        lost = asyncio.Event()
        async with pooled_session(self.pool) as conn:  # it UNLISTENs when given back
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(self.channel, self._on_notice)
            self.listening, self.last_error = True, None
            self.notice([Entry(ANYTHING, None, None, "listening")])
            try:
                await wait_any(stop, lost, timeout=None)
            finally:
                self.listening = False
                if not lost.is_set():
                    await conn.remove_listener(self.channel, self._on_notice)
        if lost.is_set() and not stop.is_set():
            raise ConnectionError("the connection listening for read-model changes was lost")

    def _on_notice(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.notice(entries_of(str(payload)))

    def notice(self, entries: list[Entry]) -> None:
        """Hand each entry of a notice to the pages it concerns."""
        self.notices += 1
        for entry in entries:
            self.hand_out(LiveEvent(next(self._seq), entry.category, "", entry.type,
                                    entry.rollout_id, entry.device_id, b""))

    async def status(self) -> Status:
        detail: dict[str, int | float | str] = {"notices": self.notices, "pages": len(self.clients)}
        if not self.listening:
            return Status(False, f"not listening for read-model changes: {self.last_error or 'starting'}",
                          detail)
        return Status(True, "", detail)
