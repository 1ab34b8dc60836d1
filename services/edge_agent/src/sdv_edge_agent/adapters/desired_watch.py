"""Watching this device's own key in KV `sdv_desired`, in a way per-device permissions allow.

nats-py's `kv.watch` creates an unnamed consumer, whose filter travels in the request body where
the server's permissions cannot see it; a *named* consumer puts the filter into the create subject
(`$JS.API.CONSUMER.CREATE.KV_sdv_desired.<name>.$KV.sdv_desired.<id>`), which a device may be
allowed for its own key only (FACTS.md). Each subscription gets a fresh name: a reused name would
collide with the server's not-yet-expired consumer.

Only the newest document matters (level-triggered), so instead of repairing sequence gaps the
watch simply subscribes anew, delivering the last value, after every reconnect; a direct get of
the key every `resync_s` backs it up. Duplicates and old revisions are the reconciler's to ignore.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_edge_agent.adapters.link import NatsLink
from sdv_events.codec import decode_as
from sdv_events.errors import DecodeError
from sdv_events.provisioning import DESIRED_BUCKET
from sdv_events.schemas.deployment import DesiredState

log = structlog.get_logger("sdv.agent.desired")
KV_OPERATION = "KV-Operation"


class DesiredWatch:
    def __init__(self, link: NatsLink, device_id: str, on_desired: Callable[[DesiredState], None],
                 *, resync_s: float = 30.0, first_resync_s: float | None = None) -> None:
        self.link = link
        self.device_id = device_id
        self.on_desired = on_desired
        self.resync_s = resync_s
        self.first_resync_s = resync_s if first_resync_s is None else first_resync_s
        self.subject = f"$KV.{DESIRED_BUCKET}.{device_id}"
        self.stream = f"KV_{DESIRED_BUCKET}"
        self._sub: Subscription | None = None

    async def subscribe(self) -> None:
        """(Re)subscribe, delivering the current value first. Called on every (re)connect."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        config = ConsumerConfig(
            name=f"desired_{self.device_id}_{secrets.token_hex(6)}",
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.NONE,
            mem_storage=True, num_replicas=1, inactive_threshold=10.0,
        )
        self._sub = await self.link.js.subscribe(
            self.subject, stream=self.stream, config=config, cb=self._on_msg, manual_ack=True,
        )
        log.info("desired_watch_subscribed", consumer=config.name)

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
        try:
            desired = decode_as(data, DesiredState)
        except DecodeError as err:
            log.error("desired_state_undecodable", reason=str(err))
            return
        if desired.device_id != self.device_id:
            log.error("desired_state_for_another_device", device_id=desired.device_id)
            return
        self.on_desired(desired)

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
