"""Batches from a durable pull consumer, at a third of nats-py's cost per message.

nats-py's `fetch` takes each message of a batch with `next_msg`, which makes two tasks and a
uuid per message: 70-90 µs of CPU per message here, the largest cost of a projection catching
up (bench/monitor.py). This sends the same pull request (`$JS.API.CONSUMER.MSG.NEXT`, batch,
`expires`, `no_wait`: the server answers with what it has as soon as it has something, or at
`expires`) and gathers the answer with a subscription callback: 25-30 µs per message.

One request at a time. What comes for a request given up on (its answer late) is kept for the
next fetch: delivered messages are never dropped here. The server's status messages end a
request: 404 (no more messages now), 408 (expired), 409 (a leadership change, a limit, the
consumer deleted: as nats-py does, taken as "nothing now", but logged once per reason).
"""

from __future__ import annotations

import asyncio
import json

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = structlog.get_logger("sdv.consumer.pull")

# How much longer than the request's `expires` a fetch waits for the server's answer.
ANSWER_GRACE_S = 1.0


class Puller:
    def __init__(self, nc: NatsClient, stream: str, durable: str) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._msgs: list[Msg] = []
        self._wanted = 0
        self._answered: asyncio.Future[None] | None = None
        self._conflicts: set[str] = set()  # 409 reasons already logged

    async def start(self) -> Puller:
        self._sub = await self.nc.subscribe(self.inbox, cb=self._on_message)
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages: as soon as some are there, else after `timeout`
        (`TimeoutError` when none came)."""
        if not self._msgs:
            self._wanted = batch
            self._answered = asyncio.get_running_loop().create_future()
            request = {"batch": batch, "expires": int(timeout * 1e9), "no_wait": True}
            await self.nc.publish(self.subject, json.dumps(request).encode(), reply=self.inbox)
            try:
                async with asyncio.timeout(timeout + ANSWER_GRACE_S):
                    await self._answered
            except TimeoutError:
                pass  # no answer in time: what came so far, if anything
            finally:
                self._answered = None
        msgs, self._msgs = self._msgs, []
        if msgs:
            return msgs
        raise TimeoutError(f"no message from {self.subject} within {timeout:g} s")

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers and not msg.data else None
        if status is None:
            self._msgs.append(msg)
            if len(self._msgs) >= self._wanted:
                self._answer()
        elif status != "100":  # 100: an idle heartbeat, not an answer
            if status == "409" and headers is not None:
                reason = headers.get("Description", "")
                if reason not in self._conflicts:
                    self._conflicts.add(reason)
                    log.warning("pull_request_refused", subject=self.subject, status=status, reason=reason)
            self._answer()

    def _answer(self) -> None:
        if self._answered is not None and not self._answered.done():
            self._answered.set_result(None)
