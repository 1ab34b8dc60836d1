"""A projection in the consumer runner: a toy read model (counts per stream) fed from SDV_EVENTS
by a real Relay.

Exactly once in effect across a crash after the commit and before the acks, a transient apply
failure retried and applied once, the checkpoint advancing over ignored events, and
rebuild("store") reproducing the model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from sdv_events.codec import WireEnvelope
from sdv_events.envelope import Envelope
from sdv_events.processing import ConsumerRunner
from sdv_events.processing.planning import Step
from sdv_events.provisioning import EVENTS_STREAM, provision
from sdv_events.registry import event
from sdv_events.relay import Relay
from sdv_events.store import ANY, EventStore


@event("projtest.Counted")
class Counted(msgspec.Struct, frozen=True):
    amount: int


@event("projtest.Noted")
class Noted(msgspec.Struct, frozen=True):
    """Decodes fine; the projection ignores it."""

    text: str


COUNTED = "projtest.Counted.v1"
Row = tuple[str, int, int, int]  # stream_id, events, total, last_version


class StreamCounts:
    """Per stream: how many Counted events, the sum of their amounts, the last version counted."""

    name = "stream_counts"
    filter_subjects = ("sdv.evt.counter.>",)

    tables = ("stream_counts",)

    def __init__(self, schema: str, *, fail_on: tuple[str, int] | None = None) -> None:
        self.schema = schema
        self.table = f"{schema}.stream_counts"
        self.fail_on = fail_on  # (stream_id, version): raise once, mid-batch

    def at(self, schema: str) -> StreamCounts:
        return StreamCounts(schema)

    async def create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (stream_id text PRIMARY KEY, "
            "events int NOT NULL, total bigint NOT NULL, last_version int NOT NULL)"
        )

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        if self.fail_on == (event.stream_id, event.version):
            self.fail_on = None
            raise Crash(f"crash while applying {event.stream_id} v{event.version}")
        if not isinstance(event.data, Counted):
            return
        await conn.execute(
            f"INSERT INTO {self.table} AS t (stream_id, events, total, last_version) "
            "VALUES ($1, 1, $2, $3) ON CONFLICT (stream_id) DO UPDATE SET "
            "events = t.events + 1, total = t.total + excluded.total, "
            "last_version = excluded.last_version",
            event.stream_id, event.data.amount, event.version,
        )

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        await conn.execute(
            f"CREATE TABLE {self.table} (stream_id text PRIMARY KEY, events int NOT NULL, "
            "total bigint NOT NULL, last_version int NOT NULL)"
        )

    async def rows(self, pool: asyncpg.Pool) -> list[Row]:
        records = await pool.fetch(
            f"SELECT stream_id, events, total, last_version FROM {self.table} ORDER BY stream_id"
        )
        return [tuple(r) for r in records]  # type: ignore[misc]


class Crash(Exception):
    pass


# --------------------------------------------------------------------------- helpers


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def last_seq(js: JetStreamContext) -> int:
    return int((await js.stream_info(EVENTS_STREAM)).state.last_seq)


async def relay_everything(store: EventStore, js: JetStreamContext) -> None:
    """Run a Relay until every stored event is on SDV_EVENTS."""
    total = int(await store.pool.fetchval(f"SELECT count(*) FROM {store.schema}.events"))
    stop = asyncio.Event()
    task = asyncio.create_task(Relay(store, js, batch_size=100, idle_poll_s=0.02).run(stop))

    async def done() -> bool:
        return int((await js.stream_info(EVENTS_STREAM)).state.messages) >= total

    try:
        await wait_until(done, timeout=20, what=f"{total} events relayed")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def read_events(js: JetStreamContext, *, timeout: float = 20.0) -> list[Msg]:
    total = int((await js.stream_info(EVENTS_STREAM)).state.messages)
    sub = await js.subscribe(
        "sdv.evt.>", stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    msgs: list[Msg] = []
    deadline = time.monotonic() + timeout
    try:
        while len(msgs) < total:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"read {len(msgs)} of {total} messages before the deadline"
            msgs.append(await sub.next_msg(timeout=remaining))
    finally:
        await sub.unsubscribe()
    return msgs


def expected_rows(msgs: list[Msg], *, up_to_seq: int | None = None) -> list[Row]:
    """The read model folded by hand from the messages on JetStream (up to a stream sequence)."""
    model: dict[str, list[int]] = {}
    for msg in msgs:
        if up_to_seq is not None and msg.metadata.sequence.stream > up_to_seq:
            break
        if not msg.subject.startswith("sdv.evt.counter."):
            continue
        wire = msgspec.json.decode(msg.data, type=WireEnvelope)
        if wire.type != COUNTED:
            continue
        amount = msgspec.json.decode(wire.data, type=Counted).amount
        row = model.setdefault(wire.stream_id, [0, 0, 0])
        row[0] += 1
        row[1] += amount
        row[2] = wire.version
    return [(s, *v) for s, v in sorted(model.items())]  # type: ignore[misc]


async def write_events(store: EventStore, *, rounds: int = 30) -> None:
    """4 counter streams of Counted events with Noted events mixed in, and one other category."""
    for n in range(rounds):
        for s in range(4):
            bodies: list[msgspec.Struct] = [Counted(amount=n * 4 + s + 1)]
            if (n + s) % 3 == 0:
                bodies.append(Noted(text=f"note {n}"))
            await store.append(f"counter-{s}", ANY, bodies)
        if n % 10 == 0:  # outside the projection's filter
            await store.append("other-1", ANY, [Counted(amount=1000)])


@pytest.fixture
async def projection(store: EventStore) -> StreamCounts:
    proj = StreamCounts(store.schema)
    async with store.pool.acquire() as conn:
        await proj.reset(conn)
    return proj


class CrashingRunner(ConsumerRunner):
    """Dies after its n-th commit, before the acks (the process killed at the worst moment)."""

    def __init__(self, *args: object, crash_after: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.crash_after = crash_after
        self.commits = 0

    async def _after_done(self, steps: Sequence[Step]) -> None:
        self.commits += 1
        if self.commits == self.crash_after:
            raise Crash("process died after the commit, before the acks")
        await super()._after_done(steps)


def runner_for(
    store: EventStore, js: JetStreamContext, projection: StreamCounts, **kwargs: object
) -> ConsumerRunner:
    return ConsumerRunner(
        store.pool, store.schema, js, projection, batch_size=10, fetch_timeout_s=0.2,  # type: ignore[arg-type]
        retry_initial_s=0.01, **kwargs,
    )


async def catch_up(runner: ConsumerRunner, timeout: float = 30.0) -> None:
    assert await asyncio.wait_for(runner.catch_up(), timeout) == "caught_up"


# --------------------------------------------------------------------------- tests


async def test_crash_after_commit_before_ack_applies_nothing_twice(
    store: EventStore, nc: NatsClient, projection: StreamCounts
) -> None:
    js = nc.jetstream()
    await write_events(store)
    await relay_everything(store, js)
    msgs = await read_events(js)
    counter_msgs = [m for m in msgs if m.subject.startswith("sdv.evt.counter.")]
    assert len(counter_msgs) == 120 + 40

    first = CrashingRunner(store.pool, store.schema, js, projection, batch_size=10,
                           fetch_timeout_s=0.2, crash_after=3)
    with pytest.raises(Crash):
        await asyncio.wait_for(first.catch_up(), 30)
    info = await js.consumer_info(EVENTS_STREAM, first.durable)
    assert info.num_ack_pending > 0, "the crashed batch should still be unacknowledged"
    partial = await projection.rows(store.pool)
    assert partial
    assert partial != expected_rows(msgs)

    second = runner_for(store, js, projection)
    await catch_up(second)
    assert await projection.rows(store.pool) == expected_rows(msgs)


async def test_apply_failing_once_is_retried_and_applied_once(
    store: EventStore, nc: NatsClient, projection: StreamCounts
) -> None:
    js = nc.jetstream()
    await write_events(store, rounds=20)
    await relay_everything(store, js)
    msgs = await read_events(js)

    failing = StreamCounts(store.schema, fail_on=("counter-2", 9))
    runner = runner_for(store, js, failing)
    await catch_up(runner)
    assert failing.fail_on is None, "the failure happened"
    assert runner.stats.retries == 1
    assert runner.stats.parked == 0
    assert await projection.rows(store.pool) == expected_rows(msgs)


async def test_checkpoint_advances_over_ignored_events(
    store: EventStore, nc: NatsClient, projection: StreamCounts
) -> None:
    js = nc.jetstream()
    await write_events(store, rounds=5)
    await relay_everything(store, js)
    runner = runner_for(store, js, projection)
    await catch_up(runner)
    model = await projection.rows(store.pool)
    assert model == expected_rows(await read_events(js))

    # Only events the projection ignores from here on.
    for n in range(25):
        await store.append(f"counter-{n % 4}", ANY, [Noted(text=f"ignored {n}")])
    await relay_everything(store, js)
    runner = runner_for(store, js, projection)
    await catch_up(runner)
    assert runner.stats.applied == 25  # handed to apply() …
    assert await projection.rows(store.pool) == model  # … which changed nothing

    # A restart starts after them: nothing left to deliver.
    restarted = runner_for(store, js, projection)
    await catch_up(restarted)
    assert restarted.stats.applied == 0
    assert restarted.stats.duplicates == 0
    assert await restarted.pending() == 0


async def test_rebuild_from_the_store_gives_the_identical_read_model(
    store: EventStore, nc: NatsClient, projection: StreamCounts
) -> None:
    js = nc.jetstream()
    await write_events(store)
    await relay_everything(store, js)
    runner = runner_for(store, js, projection)
    await catch_up(runner)
    before = await projection.rows(store.pool)
    msgs = await read_events(js)
    assert before == expected_rows(msgs)
    assert len(before) == 4

    # Damage the read model: rebuild must recompute it, not keep it.
    await store.pool.execute(f"UPDATE {projection.table} SET events = 999, total = -1")
    await store.pool.execute(
        f"INSERT INTO {projection.table} VALUES ('counter-bogus', 1, 1, 1)"
    )

    rebuilt = await asyncio.wait_for(runner_for(store, js, projection).rebuild(store=store), 30)
    assert await projection.rows(store.pool) == before
    assert rebuilt.applied == 160
    # The live consumer resumes after the rebuild without applying anything twice.
    resumed = runner_for(store, js, projection)
    await catch_up(resumed)
    assert await projection.rows(store.pool) == before


async def test_a_first_start_builds_from_the_store_whatever_the_bus_still_holds(
    store: EventStore, nc: NatsClient, projection: StreamCounts
) -> None:
    """A projection with no recorded position is built from PostgreSQL before it follows the
    bus: events JetStream no longer holds (retention, a recreated stream) are in it, and a model
    an older build left behind (with a checkpoint of its own) is replaced, not counted twice."""
    js = nc.jetstream()
    await write_events(store, rounds=10)
    await relay_everything(store, js)
    expected = expected_rows(await read_events(js))
    # What an older build's runner left: the model already applied, and no ledger of ours.
    legacy = runner_for(store, js, projection)
    await catch_up(legacy)
    assert await projection.rows(store.pool) == expected

    async def forget_the_ledger() -> None:
        await store.pool.execute(f"DELETE FROM {store.schema}.consumer_positions")
        await store.pool.execute(f"DELETE FROM {store.schema}.consumer_streams")

    await forget_the_ledger()
    await catch_up(runner_for(store, js, projection, build_from=store))
    assert await projection.rows(store.pool) == expected, "the bus's events were applied twice"

    # No model, no ledger, and the bus lost its history: built from PostgreSQL all the same.
    await forget_the_ledger()
    async with store.pool.acquire() as conn:
        await projection.reset(conn)
    await js.delete_stream(EVENTS_STREAM)
    await provision(js)
    await catch_up(runner_for(store, js, projection, build_from=store))
    assert await projection.rows(store.pool) == expected, "history the bus no longer holds is missing"
    # It follows the bus from there: new events arrive once.
    await store.append("counter-0", ANY, [Counted(amount=7)])
    stop = asyncio.Event()
    relay = asyncio.create_task(Relay(store, js, idle_poll_s=0.02).run(stop))
    try:  # the relay had published everything before: only the new event goes out

        async def out() -> bool:
            return int((await js.stream_info(EVENTS_STREAM)).state.messages) == 1

        await wait_until(out, timeout=20, what="the new event on the recreated stream")
    finally:
        stop.set()
        await relay
    await catch_up(runner_for(store, js, projection, build_from=store))
    rows = dict((r[0], r) for r in await projection.rows(store.pool))
    before = dict((r[0], r) for r in expected)
    assert rows["counter-0"][1:3] == (before["counter-0"][1] + 1, before["counter-0"][2] + 7)
