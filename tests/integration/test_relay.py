"""Relay: event log → JetStream `SDV_EVENTS`, exactly once and in per-stream order.

Real PostgreSQL, a NATS server of each test's own. Every check reads JetStream back (an ordered
consumer over `sdv.evt.>`) and compares it with the event table, event id by event id.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from sdv_events.codec import WireEnvelope, encode, encode_metadata
from sdv_events.envelope import Metadata
from sdv_events.errors import ConcurrencyConflict
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.registry import event
from sdv_events.relay import Relay
from sdv_events.store import ANY, EventStore


@event("relaytest.Ticked")
class Ticked(msgspec.Struct, frozen=True):
    writer: int
    n: int


TICKED = "relaytest.Ticked.v1"


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- tests


async def test_concurrent_writers_every_event_exactly_once_in_stream_order(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    streams = [f"thing-{i}" for i in range(10)]
    relay = RelayTask(Relay(store, js, batch_size=50, idle_poll_s=0.02))
    rng = random.Random(7)

    async def writer(w: int) -> int:
        written = 0
        for n in range(30):
            stream_id = rng.choice(streams)
            bodies = [Ticked(w, n * 10 + k) for k in range(rng.randint(1, 3))]
            if w % 2:
                await append_with_retry(store, stream_id, bodies)
            else:
                await store.append(stream_id, ANY, bodies)
            written += len(bodies)
        return written

    try:
        written = sum(await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(20))), 60))
        expected = await store_events(store)
        assert len(expected) == written

        async def all_published() -> bool:
            return await stream_count(js) >= written

        await wait_until(all_published, timeout=30, what=f"{written} events on SDV_EVENTS")
    finally:
        await relay.close()

    assert relay.relay.stats.published == written
    assert relay.relay.stats.duplicates == 0
    assert relay.relay.stats.batches > 1
    msgs = await read_events(js)
    assert len(msgs) == written
    assert_exactly_once_in_order(msgs, expected)
    # Every stream really was written concurrently and got many versions.
    per_stream = defaultdict(int)
    for stream_id, _ in expected.values():
        per_stream[stream_id] += 1
    assert set(per_stream) == set(streams)


async def test_an_open_append_holds_later_appends_of_its_schema_so_none_is_skipped(
    store: EventStore, nc: NatsClient, database_url: str
) -> None:
    """Commit order is position order: while append A's transaction is open, B (of the same
    schema) waits for it instead of committing a higher position first, so the relay, tailing
    by position, never steps over A."""
    js = nc.jetstream()
    schema = store.schema
    relay = RelayTask(Relay(store, js, batch_size=10, idle_poll_s=0.02))
    raw = await asyncpg.connect(database_url)
    try:
        await store.append("thing-a", 0, [Ticked(0, 1)])
        await store.append("thing-c", 0, [Ticked(0, 1)])
        await wait_until(lambda: _count_is(js, 2), timeout=10, what="the two early events")

        # Transaction A takes the next position and stays open.
        tx_a = raw.transaction()
        await tx_a.start()
        a_id = uuid.uuid4()
        row_a = await raw.fetchrow(
            f"SELECT * FROM {schema}.append_events($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
            "thing-a", -1, [a_id], [TICKED], [1], [encode(Ticked(1, 2))],
            [encode_metadata(Metadata())], [datetime.now(UTC)], None, None,
        )
        assert row_a is not None
        position_a = row_a["positions"][0]

        # B waits for A rather than committing a higher position before it.
        b = asyncio.create_task(store.append("thing-b", 0, [Ticked(2, 1)]))
        await asyncio.sleep(0.5)
        assert not b.done(), "B committed while A, holding a lower position, was still open"
        assert await stream_count(js) == 2

        await tx_a.commit()
        result_b = await asyncio.wait_for(b, 10)
        assert result_b.positions[0] > position_a
        await store.append("thing-c", ANY, [Ticked(2, 2)])
        await store.append("thing-a", ANY, [Ticked(3, 3)])

        expected = await store_events(store)
        assert len(expected) == 6
        await wait_until(lambda: _count_is(js, 6), timeout=15,
                         what="all 6 events, A included, on SDV_EVENTS")
    finally:
        if not raw.is_closed():
            await raw.close()
        await relay.close()

    msgs = await read_events(js)
    assert str(a_id) in {m.headers["Nats-Msg-Id"] for m in msgs if m.headers}, "A was skipped"
    assert_exactly_once_in_order(msgs, expected)
    assert relay.relay.stats.duplicates == 0


async def _count_is(js: JetStreamContext, n: int) -> bool:
    count = await stream_count(js)
    assert count <= n, f"{count} messages on SDV_EVENTS, expected at most {n}"
    return count == n


async def test_crash_between_publish_and_checkpoint_republishes_as_duplicates(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    for i in range(30):
        await store.append(f"thing-{i % 6}", ANY, [Ticked(0, i * 10 + k) for k in range(10)])
    expected = await store_events(store)
    assert len(expected) == 300

    class Crash(BaseException):  # like a kill: not an error the relay retries
        pass

    calls = 0

    async def crash_on_second_batch(count: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Crash(f"crashed after publishing {count} events, before the checkpoint")

    first = Relay(store, js, batch_size=100, idle_poll_s=0.02, after_publish=crash_on_second_batch)
    with pytest.raises(Crash):
        await asyncio.wait_for(first.run(asyncio.Event()), 15)
    # Batch 1 checkpointed, batch 2 published but not checkpointed.
    assert first.stats.published == 100
    assert first.stats.batches == 1
    assert await stream_count(js) == 200
    checkpoint = await store.pool.fetchval(
        f"SELECT position FROM {store.schema}.checkpoints WHERE name = 'relay'"
    )
    hundredth = await store.pool.fetchval(
        f"SELECT global_position FROM {store.schema}.events ORDER BY global_position OFFSET 99 LIMIT 1"
    )
    assert checkpoint == hundredth

    second = RelayTask(Relay(store, js, batch_size=100, idle_poll_s=0.02))
    try:
        await wait_until(lambda: _count_is(js, 300), timeout=15, what="the remaining 100 events")
        await wait_until(_async(lambda: second.relay.stats.batches >= 2), timeout=10,
                         what="the new relay's checkpoints")
    finally:
        await second.close()

    assert second.relay.stats.duplicates == 100
    assert second.relay.stats.published == 100
    msgs = await read_events(js)
    assert len(msgs) == 300
    assert_exactly_once_in_order(msgs, expected)


def _async(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return fn()

    return wrapped


async def test_two_relays_on_one_store_only_one_leads(
    store: EventStore, nc: NatsClient, database_url: str
) -> None:
    js = nc.jetstream()
    # Two relays as two processes would run them: each with its own pool.
    store_x = await EventStore.open(database_url, store.schema)
    store_y = await EventStore.open(database_url, store.schema)
    x = RelayTask(Relay(store_x, js, batch_size=20, idle_poll_s=0.02))
    y = RelayTask(Relay(store_y, js, batch_size=20, idle_poll_s=0.02))
    try:
        async def writer(w: int, rounds: int) -> None:
            for n in range(rounds):
                await store.append(f"thing-{(w + n) % 5}", ANY, [Ticked(w, n), Ticked(w, n + 1000)])

        await asyncio.wait_for(asyncio.gather(*(writer(w, 25) for w in range(8))), 30)
        await wait_until(lambda: _count_is(js, 400), timeout=20, what="phase 1 on SDV_EVENTS")
        # Stats count a batch once its checkpoint is written, just after JetStream acked it.
        await wait_until(_async(lambda: x.relay.stats.published + y.relay.stats.published >= 400),
                         timeout=10, what="the phase 1 checkpoint")

        stats = (x.relay.stats, y.relay.stats)
        leaders = [r for r in (x, y) if r.relay.stats.batches > 0]
        assert len(leaders) == 1, f"expected one leader, batches: {[s.batches for s in stats]}"
        leader = leaders[0]
        follower = y if leader is x else x
        assert leader.relay.stats.published == 400
        assert follower.relay.stats.published == 0
        assert stats[0].duplicates == stats[1].duplicates == 0

        # The leader goes away: the stand-by takes over from the shared checkpoint.
        await leader.close()
        await asyncio.wait_for(asyncio.gather(*(writer(w, 10) for w in range(8))), 30)
        await wait_until(lambda: _count_is(js, 560), timeout=20,
                         what="phase 2 published by the stand-by relay")
        await wait_until(_async(lambda: follower.relay.stats.published >= 160), timeout=10,
                         what="the phase 2 checkpoint")
        assert follower.relay.stats.published == 160
        assert follower.relay.stats.duplicates == 0
        assert leader.relay.stats.published == 400
    finally:
        for r in (x, y):
            if not r.task.done():
                await r.close()
        await store_x.close()
        await store_y.close()

    msgs = await read_events(js)
    assert_exactly_once_in_order(msgs, await store_events(store))
