"""Watching this device's own key in KV `sdv_desired`, in a way per-device permissions allow.

A KV put is a publish on `$KV.sdv_desired.<id>`: the device subscribes to that one subject with a
plain (core) subscription and reads the key's current value with a direct get
(`$JS.API.DIRECT.GET.KV_sdv_desired.$KV.sdv_desired.<id>`). It creates no JetStream consumer, so
its permissions grant none: a consumer's deliver subject is whatever its creator writes into the
request body, which the server does not check against the creator's permissions (FACTS.md).

A message on the subject is only a wake-up, never the value: every device shares the devices
account, and another device can make the server deliver a JetStream reply (its own desired
document, a package chunk) onto this subject by naming it as a request's reply subject, which
nats-server does not check. The value always comes from the stream, by the direct get, which
only the bucket's own writes can answer. A put's message can reach subscribers a moment before
the stream has stored it, so a get that still finds the old revision is retried briefly; wake-ups
that arrive meanwhile are folded into the next round.

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
WAKE_UP_RETRIES_S = (0.0, 0.2, 1.0)  # a wake-up's gets, until one finds a newer revision


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
        self._woken = asyncio.Event()
        self._seen_seq = 0  # stream sequence of the last value read

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
        self._woken.set()

    def _handle(self, data: bytes | None, operation: str | None) -> None:
        if operation in ("DEL", "PURGE") or not data:
            # Keep running what runs: a deleted key is not an instruction to remove every app.
            log.warning("desired_key_deleted", operation=operation)
            return
        self.on_document(data)

    async def fetch(self) -> None:
        """One direct get of the key: the only way its value is read."""
        try:
            raw = await self.link.js.get_last_msg(self.stream, self.subject, direct=True)
        except NotFoundError:
            return
        self._seen_seq = raw.seq or self._seen_seq
        self._handle(raw.data, (raw.headers or {}).get(KV_OPERATION))

    async def _after_wake_up(self) -> None:
        before = self._seen_seq
        for delay in WAKE_UP_RETRIES_S:
            await asyncio.sleep(delay)
            await self.fetch()
            if self._seen_seq != before:
                return

    async def resync_forever(self) -> None:
        """A direct get on every wake-up, and every `resync_s` (the first after `first_resync_s`)."""
        loop = asyncio.get_running_loop()
        resync_at = loop.time() + self.first_resync_s
        while True:
            woken = True
            try:
                async with asyncio.timeout_at(resync_at):
                    await self._woken.wait()
            except TimeoutError:
                woken, resync_at = False, loop.time() + self.resync_s
            self._woken.clear()
            if not self.link.is_up:
                continue
            try:
                await (self._after_wake_up() if woken else self.fetch())
            except Exception as exc:
                reraise_if_cancelling(exc)
                log.info("desired_resync_failed", reason=f"{type(exc).__name__}: {exc}")
