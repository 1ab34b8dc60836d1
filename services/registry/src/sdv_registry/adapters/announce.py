"""`sdv.announce.<device_id>`: agents introduce themselves (request/reply, the registry's queue
group); `sdv.renew.<device_id>`: accepted agents renew their credentials over their own
connection (the same exchange; only that device's JWT may publish there). Replies use the
command wire format, so a malformed announce gets a typed `invalid_request` error naming the
field, and nothing is stored.

Enrolment proves possession (sdv_events.enrolment): an unsigned announce gets a nonce; the
signed one is checked against the key it names. Every reply to an announce naming a well-formed
key is sealed to that key, because all enrolling devices share one credential and so one inbox
namespace: whoever listens on `_ENROL.>` sees only ciphertext. Announcements are rate-limited
per device id and for the whole process before any other work (`rate_limited`, with
`retry_after_s`).

Served with nats-py directly rather than a FastStream subscriber: this is the device-facing hot
path (a whole fleet re-announces after an outage), and FastStream's per-message middleware cost
about as much CPU as the admission itself (bench/registry.py). The W3C trace context still
travels: `serve_one` reads it from the headers into the events' metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sdv_events.auth import ANNOUNCE_PREFIX, RENEW_PREFIX, InvalidPublicKey
from sdv_events.bus import RateLimited, RequestInfo
from sdv_events.bus.rpc import ReplyError, serve_one
from sdv_events.codec import encode
from sdv_events.enrolment import SEALED_HEADER, SEALED_SCHEME, Purpose, seal_to
from sdv_events.envelope import Metadata
from sdv_events.schemas.devices import Announce, AnnounceReply
from sdv_registry.adapters.rate_limit import AnnounceLimiter
from sdv_registry.application import Registry
from sdv_registry.settings import SERVICE

log = structlog.get_logger("sdv.registry.announce")
_SUBJECTS: tuple[tuple[str, Purpose], ...] = ((ANNOUNCE_PREFIX, "announce"), (RENEW_PREFIX, "renew"))


def _rate_limited(device_id: str, wait: float) -> bytes:
    return encode(ReplyError(RateLimited.code, f"too many announcements; retry in {wait:.1f} s",
                             {"retry_after_s": f"{wait:.3f}", "device_id": device_id[:64]}))


async def subscribe_announcements(nc: NatsClient, registry: Registry, limiter: AnnounceLimiter, *,
                                  max_in_flight: int = 64) -> list[Subscription]:
    # nats-py runs a subscription's callbacks one after another; admissions wait on PostgreSQL,
    # so each gets a task of its own, up to `max_in_flight` at once (announces and renewals).
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def serve(msg: Msg, device_id: str, purpose: Purpose) -> None:
        announced_key: list[str] = []

        async def announce(req: Announce, info: RequestInfo) -> AnnounceReply:
            announced_key.append(req.public_key)
            # Whatever actor header a device sends, events it causes name the device.
            metadata = Metadata(correlation_id=info.command_id, causation_id=info.command_id,
                                actor=f"device:{device_id}", trace=info.metadata().trace)
            return await registry.announce(req, device_id, metadata, purpose=purpose)

        try:
            reply = await serve_one(msg.data, msg.subject, msg.headers or {}, Announce, announce)
            headers = None
            if announced_key:
                try:
                    reply = seal_to(announced_key[0], reply)
                    headers = {SEALED_HEADER: SEALED_SCHEME}
                except InvalidPublicKey:
                    pass  # the reply says so, in clear; it holds nothing of anyone else
            await nc.publish(msg.reply, reply, headers=headers)
        except Exception as exc:  # a request's own task: nobody awaits it, so say it here
            log.error("announce_reply_failed", device_id=device_id[:64], purpose=purpose,
                      error=f"{type(exc).__name__}: {exc}")
        finally:
            slots.release()

    def handler(prefix: str, purpose: Purpose) -> Callable[[Msg], Awaitable[None]]:
        async def on_request(msg: Msg) -> None:
            if not msg.reply:
                return
            device_id = msg.subject[len(prefix) + 1:]
            if wait := limiter.retry_after(device_id):
                log.info("announce_rate_limited", device_id=device_id[:64], purpose=purpose,
                         retry_after_s=round(wait, 3))
                await nc.publish(msg.reply, _rate_limited(device_id, wait))
                return
            await slots.acquire()
            task = asyncio.create_task(serve(msg, device_id, purpose))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        return on_request

    return [await nc.subscribe(f"{prefix}.*", queue=f"sdv-{SERVICE}", cb=handler(prefix, purpose))
            for prefix, purpose in _SUBJECTS]
