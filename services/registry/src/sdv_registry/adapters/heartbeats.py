"""`sdv.hb.*` on core NATS, read with nats-py directly: heartbeats are the highest-rate message
the registry sees and need no decoding, tracing or reply — only the subject."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sdv_registry.heartbeats import HEARTBEAT_PREFIX, PresenceMonitor


async def subscribe_heartbeats(nc: NatsClient, monitor: PresenceMonitor) -> Subscription:
    async def on_heartbeat(msg: Msg) -> None:
        monitor.heard(msg.subject)

    # No queue group: every replica tracks every device, the decider keeps transitions single.
    return await nc.subscribe(f"{HEARTBEAT_PREFIX}*", cb=on_heartbeat, pending_msgs_limit=1_000_000,
                              pending_bytes_limit=256 * 1024 * 1024)
