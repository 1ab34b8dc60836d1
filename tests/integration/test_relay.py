"""Relay: event log → JetStream `SDV_EVENTS`, exactly once and in per-stream order.

Real PostgreSQL, a NATS server of each test's own. Every check reads JetStream back (an ordered
consumer over `sdv.evt.>`) and compares it with the event table, event id by event id.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from sdv_events.codec import encode, encode_metadata
from sdv_events.envelope import Metadata
from sdv_events.relay import Relay
from sdv_events.store import ANY, EventStore

_support = sys.modules["sdv_relay_test_support"]
Ticked = _support.Ticked
TICKED = _support.TICKED
wait_until = _support.wait_until
stream_count = _support.stream_count
read_events = _support.read_events
store_events = _support.store_events
assert_exactly_once_in_order = _support.assert_exactly_once_in_order
RelayTask = _support.RelayTask
append_with_retry = _support.append_with_retry
_count_is = _support.count_is


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


async def test_transaction_committing_after_a_later_one_is_not_skipped(
    store: EventStore, nc: NatsClient, database_url: str
) -> None:
    """A takes a lower position and stays open; B, with a higher one, commits first. The relay
    publishes neither while A is open (B sits above a position that may still appear), then
    both, A first — A is never skipped."""
    js = nc.jetstream()
    schema = store.schema
    relay = RelayTask(Relay(store, js, batch_size=10, idle_poll_s=0.02, stuck_after_s=1.0))
    raw = await asyncpg.connect(database_url)
    try:
        # Committed before A starts: must get out even while A is open.
        await store.append("thing-a", 0, [Ticked(0, 1)])
        await store.append("thing-c", 0, [Ticked(0, 1)])
        await wait_until(lambda: _count_is(js, 2), timeout=10, what="the two early events")

        # Transaction A takes the lower position and stays open.
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

        # B (another stream) appends concurrently, with a higher position, and commits first.
        result_b = await asyncio.wait_for(store.append("thing-b", 0, [Ticked(2, 1)]), 5)
        assert result_b.positions[0] > position_a
        await store.append("thing-c", ANY, [Ticked(2, 2)])

        # Many polls while A is open: nothing above A's position may go out before A.
        await asyncio.sleep(2.5)
        assert await stream_count(js) == 2
        # ... and the relay says why it is stuck.
        status = await relay.relay.status()
        assert not status.healthy
        assert "held back" in status.reason, status.reason
        assert status.detail["behind"] == 2  # B and C committed; A is not visible yet

        await tx_a.commit()
        await store.append("thing-a", ANY, [Ticked(3, 3)])
        await store.append("thing-b", ANY, [Ticked(3, 2)])

        expected = await store_events(store)
        assert len(expected) == 7
        await wait_until(lambda: _count_is(js, 7), timeout=15,
                         what="all 7 events, A included, on SDV_EVENTS")
    finally:
        if not raw.is_closed():
            await raw.close()
        await relay.close()

    msgs = await read_events(js)
    ids = [m.headers["Nats-Msg-Id"] for m in msgs if m.headers]
    assert str(a_id) in ids, "A was skipped"
    assert ids.index(str(a_id)) < ids.index(str(result_b.events[0].event_id))
    assert_exactly_once_in_order(msgs, expected)
    assert relay.relay.stats.duplicates == 0


async def test_an_open_append_of_another_schema_holds_nothing_back(
    store: EventStore, nc: NatsClient, database_url: str, schema: str
) -> None:
    """Only this schema's appends in flight can hold its relay back."""
    js = nc.jetstream()
    other = await EventStore.open(database_url, f"{schema}_other")
    raw = await asyncpg.connect(database_url)
    relay = RelayTask(Relay(store, js, batch_size=10, idle_poll_s=0.02))
    try:
        tx = raw.transaction()
        await tx.start()
        await raw.fetchrow(
            f"SELECT * FROM {other.schema}.append_events($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
            "thing-z", -1, [uuid.uuid4()], [TICKED], [1], [encode(Ticked(9, 9))],
            [encode_metadata(Metadata())], [datetime.now(UTC)], None, None,
        )
        for n in range(5):
            await store.append("thing-a", ANY, [Ticked(0, n)])
        await wait_until(lambda: _count_is(js, 5), timeout=5,
                         what="this schema's events while another schema's append stays open")
        await tx.rollback()
    finally:
        await relay.close()
        await raw.close()
        await other.pool.execute(f"DROP SCHEMA {other.schema} CASCADE")
        await other.close()


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


async def test_a_checkpoint_of_the_previous_release_resumes_without_a_skip(store: EventStore, nc: NatsClient) -> None:
    """The previous relay's cursor was (transaction id, position): an event with a lower
    position but a later transaction could still be unpublished behind it. The new relay resumes
    below the first event that cursor had not passed; what is published again is deduplicated."""
    js = nc.jetstream()
    for n in range(6):
        await store.append(f"thing-{n % 2}", ANY, [Ticked(0, n)])
    rows = await store.pool.fetch(
        f"SELECT global_position, tx_id::text AS tx FROM {store.schema}.events ORDER BY global_position")
    # As if the old relay had published the 1st, 2nd and 4th (its order put the 4th before the
    # 3rd: a lower transaction id) and stopped there: the 3rd, 5th and 6th are unpublished.
    for i in (0, 1, 3):
        await js.publish("sdv.evt.thing.x.Ticked", b"{}", headers={"Nats-Msg-Id": str(
            await store.pool.fetchval(f"SELECT event_id FROM {store.schema}.events WHERE global_position = $1",
                                      rows[i]["global_position"]))})
    third_tx = int(rows[2]["tx"])
    await store.pool.execute(
        f"INSERT INTO {store.schema}.checkpoints (name, tx_id, position) VALUES ('relay', $1::text::xid8, $2)",
        str(third_tx - 1), rows[3]["global_position"])
    relay = RelayTask(Relay(store, js, batch_size=10, idle_poll_s=0.02))
    try:
        await wait_until(lambda: _count_is(js, 6), timeout=10, what="the three unpublished events")
    finally:
        await relay.close()
    assert relay.relay.stats.published == 3
    cursor = await store.pool.fetchrow(
        f"SELECT tx_id::text AS tx, position FROM {store.schema}.checkpoints WHERE name = 'relay'")
    assert cursor["tx"] == "0"
    assert cursor["position"] == rows[-1]["global_position"]
