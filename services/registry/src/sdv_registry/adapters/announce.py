"""`sdv.announce.<device_id>`: agents introduce themselves (request/reply, the registry's queue
group). Replies use the command wire format, so a malformed announce gets a typed
`invalid_request` error naming the field, and nothing is stored."""

from __future__ import annotations

from faststream.nats import NatsMessage, NatsRouter

from sdv_events.auth import ANNOUNCE_PREFIX
from sdv_events.bus import RequestInfo
from sdv_events.bus.rpc import serve_one
from sdv_events.envelope import Metadata
from sdv_events.schemas.devices import Announce, AnnounceReply
from sdv_registry.application import Registry
from sdv_registry.settings import SERVICE


def announce_router(registry: Registry) -> NatsRouter:
    router = NatsRouter()

    async def announce(req: Announce, info: RequestInfo) -> AnnounceReply:
        device_id = info.subject[len(ANNOUNCE_PREFIX) + 1:]
        # Whatever actor header a device sends, events it causes name the device.
        metadata = Metadata(correlation_id=info.command_id, causation_id=info.command_id,
                            actor=f"device:{device_id}", trace=info.metadata().trace)
        return await registry.announce(req, device_id, metadata)

    @router.subscriber(f"{ANNOUNCE_PREFIX}.*", queue=f"sdv-{SERVICE}")
    async def _serve(msg: NatsMessage) -> bytes:
        return await serve_one(msg.body, msg.raw_message.subject, msg.headers or {}, Announce, announce)

    return router
