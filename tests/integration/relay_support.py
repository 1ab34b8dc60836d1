"""What the relay tests share: reading SDV_EVENTS back and checking it against the event table.

Loaded by path (tests/ is not a package): `relay_support = load_relay_support()`."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from sdv_events.codec import WireEnvelope
from sdv_events.errors import ConcurrencyConflict
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.registry import event
from sdv_events.relay import Relay
from sdv_events.store import EventStore


@event("relaytest.Ticked")
class Ticked(msgspec.Struct, frozen=True):
    writer: int
    n: int


TICKED = "relaytest.Ticked.v1"


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def stream_count(js: JetStreamContext) -> int:
    info = await js.stream_info(EVENTS_STREAM)
    return int(info.state.messages)


async def read_events(js: JetStreamContext, *, timeout: float = 20.0) -> list[Msg]:
    """Every message of SDV_EVENTS in stream order, via an ordered consumer over `sdv.evt.>`."""
    total = await stream_count(js)
    msgs: list[Msg] = []
    if total == 0:
        return msgs
    sub = await js.subscribe(
        "sdv.evt.>", stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    deadline = time.monotonic() + timeout
    try:
        while len(msgs) < total:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"read {len(msgs)} of {total} messages before the deadline")
            msgs.append(await sub.next_msg(timeout=remaining))
    finally:
        await sub.unsubscribe()
    return msgs


async def store_events(store: EventStore) -> dict[uuid.UUID, tuple[str, int]]:
    rows = await store.pool.fetch(f"SELECT event_id, stream_id, version FROM {store.schema}.events")
    return {r["event_id"]: (r["stream_id"], r["version"]) for r in rows}


def assert_exactly_once_in_order(msgs: list[Msg], expected: dict[uuid.UUID, tuple[str, int]]) -> None:
    """JetStream holds each stored event exactly once, and per stream the versions 1..n in order."""
    ids = [m.headers["Nats-Msg-Id"] for m in msgs if m.headers]
    assert len(ids) == len(msgs), "a message without headers reached SDV_EVENTS"
    duplicates = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
    assert not duplicates, f"{len(ids) - len(set(ids))} duplicate messages, e.g. {sorted(duplicates)[:3]}"
    missing = {str(e) for e in expected} - set(ids)
    assert not missing, f"{len(missing)} events never published, e.g. {sorted(missing)[:3]}"
    extra = set(ids) - {str(e) for e in expected}
    assert not extra, f"{len(extra)} unknown events on SDV_EVENTS"

    versions: dict[str, list[int]] = defaultdict(list)
    last_seq = 0
    for msg in msgs:
        seq = msg.metadata.sequence.stream
        assert seq > last_seq
        last_seq = seq
        wire = msgspec.json.decode(msg.data, type=WireEnvelope)
        assert msg.headers is not None
        assert str(wire.event_id) == msg.headers["Nats-Msg-Id"]
        assert expected[wire.event_id] == (wire.stream_id, wire.version)
        category, entity = wire.stream_id.split("-", 1)
        assert msg.subject == f"sdv.evt.{category}.{entity}.{wire.type.split('.')[-2]}"
        assert msg.headers["Sdv-Stream"] == wire.stream_id
        assert msg.headers["Sdv-Version"] == str(wire.version)
        versions[wire.stream_id].append(wire.version)
    for stream_id, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), f"{stream_id} arrived out of order: {seen[:20]}"


class RelayTask:
    """A Relay running in the background until stopped."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(relay.run(self.stop))

    async def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout)


async def append_with_retry(store: EventStore, stream_id: str, bodies: list[Ticked]) -> None:
    """Expected-version append, reloading and retrying on conflict (what a command handler does)."""
    for _ in range(200):
        version = await store.stream_version(stream_id)
        try:
            await store.append(stream_id, version, bodies)
            return
        except ConcurrencyConflict:
            await asyncio.sleep(random.random() * 0.005)
    raise AssertionError(f"{stream_id}: still conflicting after 200 attempts")




async def count_is(js: JetStreamContext, n: int) -> bool:
    count = await stream_count(js)
    assert count <= n, f"{count} messages on SDV_EVENTS, expected at most {n}"
    return count == n
