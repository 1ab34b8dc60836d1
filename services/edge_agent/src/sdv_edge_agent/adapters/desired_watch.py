"""Watching this device's own key in KV `sdv_desired`, in a way per-device permissions allow.

A KV put is a publish on `$KV.sdv_desired.<id>`: the device subscribes to that one subject with a
plain (core) subscription and reads the key's current value with a direct get
(`$JS.API.DIRECT.GET.KV_sdv_desired.$KV.sdv_desired.<id>`). It creates no JetStream consumer, so
its permissions grant none: a consumer's deliver subject is whatever its creator writes into the
request body, which the server does not check against the creator's permissions (FACTS.md).

Only the newest document matters (level-triggered): after every (re)connect the watch subscribes
anew and then gets the current value; a direct get every `resync_s` backs it up (a put published
while the link was down is caught by the get after the reconnect). What arrives goes to the
agent as bytes (`Agent.receive_desired`): it acts only on a document the orchestrator signed for
this device, ignores the one it already has and refuses an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_edge_agent.adapters.link import NatsLink
from sdv_events.provisioning import DESIRED_BUCKET

log = structlog.get_logger("sdv.agent.desired")
KV_OPERATION = "KV-Operation"


class DesiredWatch:
    def __init__(self, link: NatsLink, device_id: str, on_document: Callable[[bytes], None],
                 *, resync_s: float = 30.0, first_resync_s: float | None = None) -> None:
        self.link = link
        self.device_id = device_id
        self.on_document = on_document
        self.resync_s = resync_s
        self.first_resync_s = resync_s if first_resync_s is None else first_resync_s
        self.subject = f"$KV.{DESIRED_BUCKET}.{device_id}"
        self.stream = f"KV_{DESIRED_BUCKET}"
        self._sub: Subscription | None = None

    async def subscribe(self) -> None:
        """(Re)subscribe, then read the current value. Called on every (re)connect."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        nc = self.link.nc
        if nc is None:
            return
        self._sub = await nc.subscribe(self.subject, cb=self._on_msg)
        log.info("desired_watch_subscribed", subject=self.subject)
        await self.fetch()

    async def _on_msg(self, msg: Msg) -> None:
        if msg.subject != self.subject:  # a deliver subject can be replayed onto: check what came
            log.warning("desired_watch_foreign_subject", subject=msg.subject)
            return
        self._handle(msg.data, (msg.headers or {}).get(KV_OPERATION))

    def _handle(self, data: bytes | None, operation: str | None) -> None:
        if operation in ("DEL", "PURGE") or not data:
            # Keep running what runs: a deleted key is not an instruction to remove every app.
            log.warning("desired_key_deleted", operation=operation)
            return
        self.on_document(data)

    async def fetch(self) -> None:
        """One direct get of the key (the safety net beside the watch)."""
        try:
            raw = await self.link.js.get_last_msg(self.stream, self.subject, direct=True)
        except NotFoundError:
            return
        self._handle(raw.data, (raw.headers or {}).get(KV_OPERATION))

    async def resync_forever(self) -> None:
        delay = self.first_resync_s
        while True:
            await asyncio.sleep(delay)
            delay = self.resync_s
            if not self.link.is_up:
                continue
            try:
                await self.fetch()
            except Exception as exc:
                reraise_if_cancelling(exc)
                log.info("desired_resync_failed", reason=f"{type(exc).__name__}: {exc}")
