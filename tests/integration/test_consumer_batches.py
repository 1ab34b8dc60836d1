"""A fetched batch in one transaction (sdv_events.processing.runner), against real NATS and
PostgreSQL: a projection that writes the batch set-wise (`apply_batch`) with a poison event in
the middle, a connection killed after the commit and before the ack, PostgreSQL's connection
killed in the middle of a batch, and a consumer of several categories reading one covering
JetStream subject."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from sdv_events.codec import encode
from sdv_events.envelope import Envelope
from sdv_events.processing import AppliesBatches, ConsumerRunner
from sdv_events.processing.planning import Step
from sdv_events.provisioning import DLQ_STREAM, EVENTS_STREAM
from sdv_events.registry import event
from sdv_events.store import ANY, EventStore
from sdv_events.subjects import event_subject

pytestmark = pytest.mark.timeout(120)


@event("batchtest.Added")
class Added(msgspec.Struct, frozen=True):
    amount: int


class Poisoned(Exception):
    pass


class Ledger:
    """Per stream: the amounts applied, in order; and how often each (stream, version) was
    handed over in a transaction that committed (`applied`, a table of its own)."""

    name = "batch_ledger"
    filter_subjects: tuple[str, ...] = ("sdv.evt.bsum.>",)
    tables = ("batch_sums", "batch_applied")

    def __init__(self, schema: str, *, poison: int | None = None) -> None:
        self.schema = schema
        self.poison = poison
        self.batches: list[int] = []  # sizes of the batches apply_batch was handed
        self.kill: asyncpg.Pool | None = None  # set: kill the connection during the next batch

    def at(self, schema: str) -> Ledger:
        return type(self)(schema, poison=self.poison)

    async def create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.schema}.batch_sums (stream_id text PRIMARY KEY, "
            "amounts int[] NOT NULL);"
            f"CREATE TABLE IF NOT EXISTS {self.schema}.batch_applied (stream_id text, version int, "
            "PRIMARY KEY (stream_id, version))")

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        await self.apply_batch(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        self.batches.append(len(events))
        if self.kill is not None and len(events) > 1:
            pool, self.kill = self.kill, None
            await pool.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        # Set-wise, as a projection that writes a batch in one statement does: one event that
        # cannot be applied fails the statement, and so the whole batch.
        if any(e.data.amount == self.poison for e in events):
            raise Poisoned(f"cannot apply amount {self.poison}")
        await conn.execute(
            f"INSERT INTO {self.schema}.batch_applied "
            "SELECT * FROM unnest($1::text[], $2::int[])",  # a second apply of one is a conflict
            [e.stream_id for e in events], [e.version for e in events])
        for e in events:
            await conn.execute(
                f"INSERT INTO {self.schema}.batch_sums AS t VALUES ($1, ARRAY[$2::int]) "
                "ON CONFLICT (stream_id) DO UPDATE SET amounts = t.amounts || excluded.amounts",
                e.stream_id, e.data.amount)

    async def sums(self, pool: asyncpg.Pool) -> dict[str, list[int]]:
        return {r["stream_id"]: list(r["amounts"]) for r in await pool.fetch(
            f"SELECT * FROM {self.schema}.batch_sums ORDER BY stream_id")}


async def publish_all(js: JetStreamContext, envelopes: Sequence[Envelope]) -> None:
    for envelope in envelopes:
        await js.publish(event_subject(envelope.stream_id, envelope.type), encode(envelope),
                         headers={"Nats-Msg-Id": str(envelope.event_id)})


async def runner_for(store: EventStore, js: JetStreamContext, consumer: Ledger, **kwargs: object
                     ) -> ConsumerRunner:
    async with store.pool.acquire() as conn:
        await consumer.create(conn)
    return ConsumerRunner(store.pool, store.schema, js, consumer, batch_size=20,  # type: ignore[arg-type]
                          fetch_timeout_s=0.2, retry_initial_s=0.01, **kwargs)  # type: ignore[arg-type]


async def appended(store: EventStore, stream: str, amounts: list[int]) -> list[Envelope]:
    return list((await store.append(stream, ANY, [Added(a) for a in amounts])).events)


async def dead_letters(js: JetStreamContext) -> list[Msg]:
    total = int((await js.stream_info(DLQ_STREAM)).state.messages)
    if not total:
        return []
    sub = await js.subscribe("sdv.dlq.>", stream=DLQ_STREAM, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=5) for _ in range(total)]
    finally:
        await sub.unsubscribe()


async def test_a_poison_event_in_the_middle_of_a_set_wise_batch_is_parked_and_the_rest_applied_once(
        store: EventStore, nc: NatsClient) -> None:
    js = nc.jetstream()
    first = await appended(store, "bsum-1", [1, 2, 3, 4, 5])
    poison = await appended(store, "bsum-2", [6, 13, 7])
    last = await appended(store, "bsum-3", [8, 9])
    await publish_all(js, [*first, *poison, *last])
    ledger = Ledger(store.schema, poison=13)
    assert isinstance(ledger, AppliesBatches)
    runner = await runner_for(store, js, ledger, max_attempts=2)
    assert await runner.catch_up() == "caught_up"

    # The batch was handed over whole once; it failed, and the events were then applied one by
    # one to find the poison: every other event is in, once (a second apply would have hit the
    # primary key of `batch_applied` and failed the test's transaction).
    assert ledger.batches[0] == 10
    assert await ledger.sums(store.pool) == {"bsum-1": [1, 2, 3, 4, 5], "bsum-2": [6, 7],
                                             "bsum-3": [8, 9]}
    assert await store.pool.fetchval(f"SELECT count(*) FROM {store.schema}.batch_applied") == 9
    # The poison is recorded as a failure, as before: parked with its reason, counted.
    [parked] = await dead_letters(js)
    assert parked.subject == "sdv.dlq.sdv.evt.bsum.2.Added"
    assert parked.headers is not None
    assert parked.headers["Sdv-Dlq-Reason"] == "apply_failed"
    assert "Poisoned: cannot apply amount 13" in parked.headers["Sdv-Dlq-Detail"]
    assert runner.stats.parked == 1
    assert (await runner.status()).detail["parked"] == 1
    # Nothing comes again after a restart: the checkpoint is past all of them.
    again = await runner_for(store, js, Ledger(store.schema, poison=13))
    assert await again.catch_up() == "caught_up"
    assert again.stats.applied == 0
    assert again.stats.duplicates == 0


class LosesNatsBeforeTheAck(ConsumerRunner):
    """Its NATS connection is killed after its first commit, before the ack."""

    async def _after_done(self, steps: Sequence[Step]) -> None:
        if any(s.msg is not None for s in steps):
            await self.js._nc.close()
        await super()._after_done(steps)


async def test_nats_killed_between_the_commit_and_the_ack_redelivers_and_applies_nothing_twice(
        store: EventStore, nc: NatsClient, fresh_nats_url: str) -> None:
    import nats

    events = [*await appended(store, "bsum-1", list(range(1, 16))),
              *await appended(store, "bsum-2", list(range(16, 31)))]
    await publish_all(nc.jetstream(), events)
    doomed = await nats.connect(fresh_nats_url)
    ledger = Ledger(store.schema)
    async with store.pool.acquire() as conn:
        await ledger.create(conn)
    dying = LosesNatsBeforeTheAck(store.pool, store.schema, doomed.jetstream(), ledger,
                                  batch_size=20, fetch_timeout_s=0.2)
    # The ack is lost (logged, not retried as a failure of the batch: its events are not
    # handed over again); the runner cannot fetch any more and gives up.
    with pytest.raises(nats.errors.ConnectionClosedError):
        await asyncio.wait_for(dying.catch_up(), 30)
    assert dying.stats.parked == 0
    assert dying.stats.retries == 0
    done = await store.pool.fetchval(f"SELECT count(*) FROM {store.schema}.batch_applied")
    assert done >= 20
    info = await nc.jetstream().consumer_info(EVENTS_STREAM, dying.durable)
    assert info.num_ack_pending > 0, "the committed batch was never acked"

    # A new runner: the unacked messages come again (JetStream) and are recognised as done
    # (the ledger); the rest is applied; each event once.
    runner = await runner_for(store, nc.jetstream(), ledger)
    assert await asyncio.wait_for(runner.catch_up(), 30) == "caught_up"
    assert await ledger.sums(store.pool) == {"bsum-1": list(range(1, 16)),
                                             "bsum-2": list(range(16, 31))}
    assert await store.pool.fetchval(f"SELECT count(*) FROM {store.schema}.batch_applied") == 30
    assert runner.stats.applied == 30 - done


async def test_postgres_connection_killed_in_the_middle_of_a_batch_is_waited_out_and_applies_each_once(
        store: EventStore, nc: NatsClient) -> None:
    js = nc.jetstream()
    await publish_all(js, await appended(store, "bsum-1", list(range(1, 31))))
    ledger = Ledger(store.schema)
    ledger.kill = store.pool  # the batch's own connection is terminated while it applies
    runner = await runner_for(store, js, ledger)
    assert await asyncio.wait_for(runner.catch_up(), 30) == "caught_up"
    assert await ledger.sums(store.pool) == {"bsum-1": list(range(1, 31))}
    assert await store.pool.fetchval(f"SELECT count(*) FROM {store.schema}.batch_applied") == 30
    assert runner.stats.parked == 0


class TwoCategories(Ledger):
    name = "two_categories"
    filter_subjects = ("sdv.evt.bsum.>", "sdv.evt.bcnt.>")


async def test_a_consumer_of_two_categories_reads_one_covering_subject_skips_the_others_and_moves_on(
        store: EventStore, nc: NatsClient) -> None:
    js = nc.jetstream()
    for n in range(5):
        await publish_all(js, await appended(store, "bsum-1", [n + 1]))
        await publish_all(js, await appended(store, "bother-1", [100 + n]))  # not wanted
        await publish_all(js, await appended(store, "bcnt-1", [10 + n]))
    await publish_all(js, await appended(store, "bother-2", [999]))  # the last on the stream
    last = int((await js.stream_info(EVENTS_STREAM)).state.last_seq)
    consumer = TwoCategories(store.schema)
    runner = await runner_for(store, js, consumer)
    assert await runner.catch_up() == "caught_up"

    # One JetStream filter covering both categories (several filters are far slower on a
    # stream of many subjects); the other category's events were skipped unread.
    info = await js.consumer_info(EVENTS_STREAM, runner.durable)
    assert info.config.filter_subject == "sdv.evt.*.>"
    assert not info.config.filter_subjects
    assert await consumer.sums(store.pool) == {"bcnt-1": [10, 11, 12, 13, 14], "bsum-1": [1, 2, 3, 4, 5]}
    assert runner.stats.applied == 10
    # Its position advanced over them, to the last message on the stream …
    position = await runner.ledger.position(store.pool)
    assert position is not None
    assert position.seq == last
    assert await runner.pending() == 0
    # … so a restart has nothing to read again, and reads what comes next.
    await publish_all(js, await appended(store, "bcnt-1", [15]))
    again = await runner_for(store, js, TwoCategories(store.schema))
    assert await again.catch_up() == "caught_up"
    assert again.stats.applied == 1
    assert again.stats.duplicates == 0
    assert (await consumer.sums(store.pool))["bcnt-1"] == [10, 11, 12, 13, 14, 15]
