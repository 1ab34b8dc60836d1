"""Live events for dashboards: one ordered JetStream consumer of `sdv.evt.>` (from now on),
fanned out in process to every server-sent-events client whose filter matches (`/api/stream`).
Each event carries its JetStream sequence as its SSE id; a client that reconnects with
`Last-Event-ID` gets what it missed from a ring buffer of the latest events (or a `reset` event
telling it to reload when it missed more than the buffer holds). The dashboard's pages hear of
changes from the read model itself instead (view_changes.py), through the same fan-out."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from sdv_events.codec import WireEnvelope
from sdv_events.errors import DecodeError
from sdv_events.ids import split_stream_id
from sdv_events.provisioning import EVENTS_STREAM

log = structlog.get_logger("sdv.monitor.live")
_wire = msgspec.json.Decoder(WireEnvelope)
_body = msgspec.json.Decoder(dict[str, Any])
ANYTHING = "*"


@dataclass(frozen=True)
class LiveEvent:
    seq: int
    category: str
    entity: str
    type: str
    rollout_id: str | None
    device_id: str | None
    json: bytes  # what the client receives


@dataclass(frozen=True)
class Filter:
    rollout: str | None = None
    device: str | None = None
    alerts: bool = False

    def matches(self, e: LiveEvent) -> bool:
        if e.category == ANYTHING:  # a notice that anything may have changed
            return True
        if self.alerts and e.category != "alert":
            return False
        if self.rollout is not None and e.rollout_id != self.rollout:
            return False
        return self.device is None or e.device_id == self.device


def live_event(seq: int, payload: bytes) -> LiveEvent | None:
    """What a client gets of one bus message (None: not for clients, or unreadable)."""
    try:
        wire = _wire.decode(payload)
        category, entity = split_stream_id(wire.stream_id)
        body = _body.decode(bytes(wire.data)) if category in ("agent", "alert", "rollout") else {}
    except (msgspec.DecodeError, DecodeError, ValueError):
        return None
    if category == "facts":  # the monitor's record of a fact: the fact is already on the feed
        return None
    rollout = entity if category == "rollout" else body.get("rollout_id")
    device = entity if category in ("agent", "device") else body.get("device_id")
    doc = {"seq": seq, "stream_id": wire.stream_id, "version": wire.version, "type": wire.type,
           "occurred_at": wire.occurred_at, "actor": wire.actor, "data": wire.data}
    return LiveEvent(seq, category, entity, wire.type, rollout if isinstance(rollout, str) else None,
                     device if isinstance(device, str) else None, msgspec.json.encode(doc))


class Fanout:
    """Events handed to every following client whose filter matches; a client that cannot keep
    up is let go (its stream ends), never waited for."""

    def __init__(self, *, buffer: int = 50_000, client_queue: int = 10_000) -> None:
        self.buffer: deque[LiveEvent] = deque(maxlen=buffer)
        self.client_queue = client_queue
        self.clients: set[asyncio.Queue[LiveEvent | None]] = set()
        self.dropped_clients = 0

    def hand_out(self, event: LiveEvent) -> None:
        self.buffer.append(event)
        for queue in list(self.clients):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a client that cannot keep up is let go, not waited for
                self.clients.discard(queue)
                self.dropped_clients += 1
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)

    async def follow(self, wanted: Filter, last_seq: int | None) -> AsyncIterator[LiveEvent | str]:
        """Events for one client: the missed ones (after `last_seq`) first, then live ones.
        Yields "reset" when what it missed is no longer buffered."""
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(self.client_queue)
        self.clients.add(queue)
        try:
            newest = last_seq or 0
            if last_seq is not None:
                if self.buffer and self.buffer[0].seq > last_seq + 1:
                    yield "reset"
                for missed in list(self.buffer):
                    if missed.seq > last_seq and wanted.matches(missed):
                        newest = missed.seq
                        yield missed
            while True:
                event = await queue.get()
                if event is None:
                    return
                if event.seq > newest and wanted.matches(event):
                    yield event
        finally:
            self.clients.discard(queue)


class LiveFeed(Fanout):
    def __init__(self, js: JetStreamContext, *, buffer: int = 50_000, client_queue: int = 10_000) -> None:
        super().__init__(buffer=buffer, client_queue=client_queue)
        self.js = js
        self.received = 0
        self.by_category: dict[str, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        sub = await self.js.subscribe("sdv.evt.>", stream=EVENTS_STREAM, ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.NEW)
        try:
            while not stop.is_set():
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except TimeoutError:
                    continue
                self.publish(msg.metadata.sequence.stream, msg.data)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def publish(self, seq: int, payload: bytes) -> None:
        event = live_event(seq, payload)
        if event is None:
            return
        self.received += 1
        self.by_category[event.category] = self.by_category.get(event.category, 0) + 1
        self.hand_out(event)
