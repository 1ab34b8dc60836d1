"""`sdv.announce.<device_id>`: agents introduce themselves (request/reply, the registry's queue
group). Replies use the command wire format, so a malformed announce gets a typed
`invalid_request` error naming the field, and nothing is stored.

Served with nats-py directly rather than a FastStream subscriber: this is the device-facing hot
path (a whole fleet re-announces after an outage), and FastStream's per-message middleware cost
about as much CPU as the admission itself (bench/registry.py). The W3C trace context still
travels: `serve_one` reads it from the headers into the events' metadata.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sdv_events.auth import ANNOUNCE_PREFIX
from sdv_events.bus import RequestInfo
from sdv_events.bus.rpc import serve_one
from sdv_events.envelope import Metadata
from sdv_events.schemas.devices import Announce, AnnounceReply
from sdv_registry.application import Registry
from sdv_registry.settings import SERVICE


async def subscribe_announcements(nc: NatsClient, registry: Registry, *, max_in_flight: int = 64
                                  ) -> Subscription:
    async def announce(req: Announce, info: RequestInfo) -> AnnounceReply:
        device_id = info.subject[len(ANNOUNCE_PREFIX) + 1:]
        # Whatever actor header a device sends, events it causes name the device.
        metadata = Metadata(correlation_id=info.command_id, causation_id=info.command_id,
                            actor=f"device:{device_id}", trace=info.metadata().trace)
        return await registry.announce(req, device_id, metadata)

    # nats-py runs a subscription's callbacks one after another; admissions wait on PostgreSQL,
    # so each gets a task of its own, up to `max_in_flight` at once.
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def serve(msg: Msg) -> None:
        try:
            reply = await serve_one(msg.data, msg.subject, msg.headers or {}, Announce, announce)
            await msg.respond(reply)
        finally:
            slots.release()

    async def on_announce(msg: Msg) -> None:
        if not msg.reply:
            return
        await slots.acquire()
        task = asyncio.create_task(serve(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await nc.subscribe(f"{ANNOUNCE_PREFIX}.*", queue=f"sdv-{SERVICE}", cb=on_announce)
