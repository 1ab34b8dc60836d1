"""The one consumer runner (sdv_events.processing) against real NATS and PostgreSQL: dedupe by
stream version whatever JetStream says, gaps healed from the owning store, a failing handler
parked while the rest goes on, a consumer that stops at an event of a newer build (and a writer
that says so), and read models rebuilt from PostgreSQL alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from sdv_events.bus.rpc import CommandClient, InvalidRequest, UpgradeRequired, serve_one
from sdv_events.codec import encode
from sdv_events.commands import handle_command
from sdv_events.decider import Decider
from sdv_events.envelope import Envelope
from sdv_events.processing import ConsumerRunner, StoreSource
from sdv_events.provisioning import DLQ_STREAM, EVENTS_STREAM, provision
from sdv_events.registry import EventRegistry, event
from sdv_events.relay import Relay
from sdv_events.store import ANY, EventStore
from sdv_events.subjects import event_subject


@event("constest.Added")
class Added(msgspec.Struct, frozen=True):
    amount: int


class Boom(Exception):
    pass


class Tally:
    """Per stream: the sum of amounts and the versions applied, in the order applied."""

    name = "tally"
    filter_subjects = ("sdv.evt.tally.>",)
    tables = ("tally",)

    def __init__(self, schema: str, *, poison: int | None = None) -> None:
        self.schema = schema
        self.poison = poison  # an amount whose apply always raises

    def at(self, schema: str) -> Tally:
        return Tally(schema, poison=self.poison)

    async def create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {self.schema}.tally (stream_id text "
                           "PRIMARY KEY, total bigint NOT NULL, versions int[] NOT NULL)")

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        amount = event.data.amount
        if amount == self.poison:
            raise Boom(f"cannot apply amount {amount}")
        await conn.execute(
            f"INSERT INTO {self.schema}.tally AS t VALUES ($1, $2, ARRAY[$3::int]) "
            "ON CONFLICT (stream_id) DO UPDATE SET total = t.total + excluded.total, "
            "versions = t.versions || excluded.versions", event.stream_id, amount, event.version)

    async def rows(self, pool: asyncpg.Pool) -> dict[str, tuple[int, list[int]]]:
        return {r["stream_id"]: (r["total"], list(r["versions"])) for r in await pool.fetch(
            f"SELECT * FROM {self.schema}.tally ORDER BY stream_id")}


async def publish(js: JetStreamContext, envelope: Envelope, msg_id: str | None = None) -> None:
    """As the relay does, with a message id of our choosing (another id = JetStream's dedupe
    window has passed, or the stream forgot it)."""
    ack = await js.publish(event_subject(envelope.stream_id, envelope.type), encode(envelope),
                           headers={"Nats-Msg-Id": msg_id or str(envelope.event_id)})
    assert not ack.duplicate


async def runner_for(store: EventStore, js: JetStreamContext, consumer: object, **kwargs: object
                     ) -> ConsumerRunner:
    async with store.pool.acquire() as conn:
        await consumer.create(conn)  # type: ignore[attr-defined]
    return ConsumerRunner(store.pool, store.schema, js, consumer, batch_size=10,  # type: ignore[arg-type]
                          fetch_timeout_s=0.2, **kwargs)  # type: ignore[arg-type]


async def dead_letters(js: JetStreamContext) -> list[Msg]:
    total = int((await js.stream_info(DLQ_STREAM)).state.messages)
    if not total:
        return []
    sub = await js.subscribe("sdv.dlq.>", stream=DLQ_STREAM, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=5) for _ in range(total)]
    finally:
        await sub.unsubscribe()


# ------------------------------------------------------------------ dedupe, gaps, parking


async def test_duplicate_published_after_the_dedupe_window_changes_nothing(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    appended = (await store.append("tally-1", ANY, [Added(1), Added(2)])).events
    for envelope in appended:
        await publish(js, envelope)
    tally = Tally(store.schema)
    runner = await runner_for(store, js, tally)
    assert await runner.catch_up() == "caught_up"
    assert await tally.rows(store.pool) == {"tally-1": (3, [1, 2])}

    # The same event again under another message id: JetStream stores it as new.
    await publish(js, appended[0], msg_id="republished-after-the-window")
    assert int((await js.stream_info(EVENTS_STREAM)).state.messages) == 3
    restarted = await runner_for(store, js, tally)
    assert await restarted.catch_up() == "caught_up"
    assert await tally.rows(store.pool) == {"tally-1": (3, [1, 2])}
    assert restarted.stats.duplicates == 1
    assert await restarted.pending() == 0  # acked, not left behind


async def test_gap_in_a_streams_versions_is_healed_from_the_owning_store(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    events = (await store.append("tally-1", ANY, [Added(n) for n in (1, 2, 3, 4, 5)])).events
    # On the stream: 1, 2, then 5 (3 and 4 lost, as in a nats-server kill mid-batch), then the
    # late 3 and 4 (the relay's resend) — JetStream order is not version order.
    for envelope in (events[0], events[1], events[4], events[2], events[3]):
        await publish(js, envelope)
    tally = Tally(store.schema)
    runner = await runner_for(store, js, tally, source=StoreSource(store))
    assert await runner.catch_up() == "caught_up"
    assert await tally.rows(store.pool) == {"tally-1": (15, [1, 2, 3, 4, 5])}
    assert runner.stats.healed == 2
    assert runner.stats.duplicates == 2  # the late 3 and 4 changed nothing


async def test_regression_on_the_stream_is_never_applied_out_of_order(
    store: EventStore, nc: NatsClient
) -> None:
    """`…, 299, 300, 1, 2, …` after a kill: a consumer that starts on it applies 1..n once, in order."""
    js = nc.jetstream()
    events = (await store.append("tally-9", ANY, [Added(1) for _ in range(40)])).events
    for n, envelope in enumerate(events[20:] + events):  # 21..40, then 1..40 again
        await publish(js, envelope, msg_id=f"resent-{n}")
    tally = Tally(store.schema)
    runner = await runner_for(store, js, tally, source=StoreSource(store))
    assert await runner.catch_up() == "caught_up"
    assert await tally.rows(store.pool) == {"tally-9": (40, list(range(1, 41)))}


async def test_apply_that_raises_is_parked_and_the_next_message_applied(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    for envelope in [*(await store.append("tally-1", ANY, [Added(1), Added(13), Added(2)])).events,
                     *(await store.append("tally-2", ANY, [Added(5)])).events]:
        await publish(js, envelope)
    tally = Tally(store.schema, poison=13)
    runner = await runner_for(store, js, tally, max_attempts=3, retry_initial_s=0.01)
    assert await runner.catch_up() == "caught_up"
    # The poison event is skipped (parked); the events after it, on its stream and others, apply.
    assert await tally.rows(store.pool) == {"tally-1": (3, [1, 3]), "tally-2": (5, [1])}
    status = await runner.status()
    assert status.healthy
    assert status.detail["parked"] == 1
    assert runner.stats.retries == 2
    [parked] = await dead_letters(js)
    assert parked.subject == "sdv.dlq.sdv.evt.tally.1.Added"
    assert parked.headers is not None
    assert parked.headers["Sdv-Dlq-Reason"] == "apply_failed"
    assert "Boom: cannot apply amount 13" in parked.headers["Sdv-Dlq-Detail"]
    assert msgspec.json.decode(parked.data)["version"] == 2
    # The count survives a restart (it is kept in PostgreSQL with the checkpoint).
    again = await runner_for(store, js, tally)
    await again.catch_up()
    assert (await again.status()).detail["parked"] == 1


# ------------------------------------------------------------------ schema evolution


@event("constest.Scored", 1, registry=EventRegistry())
class ScoredV1(msgspec.Struct, frozen=True):
    points: int


class ScoredV2(msgspec.Struct, frozen=True):
    points: int
    bonus: int


def registry_with(*versions: int) -> EventRegistry:
    registry = EventRegistry()
    if 1 in versions:
        registry.register(ScoredV1, "constest.Scored", 1)
    if 2 in versions:
        registry.register(ScoredV2, "constest.Scored", 2)
    return registry


class ScoreBoard:
    name = "scoreboard"
    filter_subjects = ("sdv.evt.score.>",)
    tables = ("scores",)

    def __init__(self, schema: str) -> None:
        self.schema = schema

    def at(self, schema: str) -> ScoreBoard:
        return ScoreBoard(schema)

    async def create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {self.schema}.scores "
                           "(stream_id text, version int, points int, PRIMARY KEY (stream_id, version))")

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        match event.data:
            case ScoredV1(points=p):
                points = p
            case ScoredV2(points=p, bonus=b):
                points = p + b
        await conn.execute(f"INSERT INTO {self.schema}.scores VALUES ($1, $2, $3)",
                           event.stream_id, event.version, points)

    async def rows(self, pool: asyncpg.Pool) -> list[tuple[int, int]]:
        return [(r["version"], r["points"]) for r in await pool.fetch(
            f"SELECT version, points FROM {self.schema}.scores ORDER BY version")]


async def test_v2_event_meets_a_v1_consumer_it_waits_and_skips_nothing(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    writer = EventStore(store.pool, store.schema, registry=registry_with(1, 2))  # the new build
    written = (await writer.append("score-1", ANY, [ScoredV1(10), ScoredV2(20, 5), ScoredV1(30)])).events
    for envelope in written:
        await publish(js, envelope)
    board = ScoreBoard(store.schema)

    old = await runner_for(store, js, board, registry=registry_with(1))  # the old build
    assert await old.catch_up() == "blocked"
    assert await board.rows(store.pool) == [(1, 10)]  # stopped at v2: not skipped, not past it
    status = await old.status()
    assert not status.healthy
    assert "constest.Scored.v2" in status.reason
    assert "upgrade needed" in status.reason
    assert await dead_letters(js) == []  # nothing dead-lettered either

    upgraded = await runner_for(store, js, board, registry=registry_with(1, 2))  # restarted
    assert await upgraded.catch_up() == "caught_up"
    assert await board.rows(store.pool) == [(1, 10), (2, 25), (3, 30)]
    assert (await upgraded.status()).healthy


class Score(msgspec.Struct, frozen=True):
    points: int


score_decider: Decider[Score, object, int] = Decider(
    initial=0, decide=lambda cmd, total: [ScoredV1(cmd.points)], evolve=lambda total, e: total + 1)


async def test_writer_that_cannot_fold_its_stream_answers_upgrade_needed(
    store: EventStore, nc: NatsClient
) -> None:
    new_build = EventStore(store.pool, store.schema, registry=registry_with(1, 2))
    await new_build.append("score-7", ANY, [ScoredV1(1), ScoredV2(2, 3)])
    old_build = EventStore(store.pool, store.schema, registry=registry_with(1))

    async def score(request: Score, _: object) -> object:
        return await handle_command(old_build, score_decider, "score-7", request)

    async def answer(msg: Msg) -> None:
        await msg.respond(await serve_one(msg.data, msg.subject, msg.headers or {}, Score, score))

    sub = await nc.subscribe("sdv.cmd.scorer.score", cb=answer)
    try:
        with pytest.raises(UpgradeRequired) as caught:
            await CommandClient(nc).call("scorer", "score", Score(4), dict)
    finally:
        await sub.unsubscribe()
    assert caught.value.code == "upgrade_needed"
    assert caught.value.details == {"stream_id": "score-7", "type": "constest.Scored.v2"}
    assert "upgrade" in caught.value.message
    assert await store.stream_version("score-7") == 2  # nothing appended


# ------------------------------------------------------------------ rebuild from PostgreSQL


async def relay_all(store: EventStore, js: JetStreamContext) -> None:
    total = int(await store.pool.fetchval(f"SELECT max(global_position) FROM {store.schema}.events"))
    stop = asyncio.Event()
    relay = Relay(store, js, batch_size=100, idle_poll_s=0.02)
    task = asyncio.create_task(relay.run(stop))
    try:
        for _ in range(400):
            done = await store.pool.fetchval(
                f"SELECT position FROM {store.schema}.checkpoints WHERE name LIKE 'relay%'")
            if done is not None and int(done) >= total:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the relay did not publish everything")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_read_model_rebuilt_from_postgres_equals_the_live_one_after_sdv_events_was_lost(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    for n in range(30):
        await store.append(f"tally-{n % 4}", ANY, [Added(n)])
    await relay_all(store, js)
    tally = Tally(store.schema)
    live = await runner_for(store, js, tally, source=StoreSource(store))
    assert await live.catch_up() == "caught_up"
    before = await tally.rows(store.pool)
    assert sum(total for total, _ in before.values()) == sum(range(30))

    # SDV_EVENTS is lost (deleted and recreated: deny_purge forbids a purge) and the read
    # model damaged; only PostgreSQL is left to rebuild from.
    await js.delete_stream(EVENTS_STREAM)
    await provision(js)
    await store.pool.execute(f"UPDATE {store.schema}.tally SET total = -1")
    rebuilt = await live.rebuild("store", store=store)
    assert rebuilt.events == 30
    assert await tally.rows(store.pool) == before
    assert not await store.pool.fetchval(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1", f"{store.schema}_rebuild%")

    # The live consumer goes on on the new stream: new events apply, none twice.
    for n in range(30, 34):
        await store.append(f"tally-{n % 4}", ANY, [Added(n)])
    await relay_all(store, js)
    assert await live.catch_up() == "caught_up"
    after = await tally.rows(store.pool)
    assert {s: v[1] for s, v in after.items()} == {f"tally-{s}": list(range(1, 10 if s < 2 else 9))
                                                  for s in range(4)}
    assert sum(total for total, _ in after.values()) == sum(range(34))


async def test_rebuild_is_refused_while_another_runner_leads_and_nothing_is_wiped(
    store: EventStore, nc: NatsClient, database_url: str
) -> None:
    from sdv_events.processing import ConsumerBusy

    js = nc.jetstream()
    for envelope in (await store.append("tally-1", ANY, [Added(1)])).events:
        await publish(js, envelope)
    tally = Tally(store.schema)
    live = await runner_for(store, js, tally)
    stop = asyncio.Event()
    task = asyncio.create_task(live.run(stop))
    other_pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        for _ in range(100):
            if await tally.rows(store.pool):
                break
            await asyncio.sleep(0.05)
        elsewhere = ConsumerRunner(other_pool, store.schema, js, Tally(store.schema))
        with pytest.raises(ConsumerBusy):
            await elsewhere.rebuild("store", store=store)
        assert await tally.rows(store.pool) == {"tally-1": (1, [1])}
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await other_pool.close()


async def test_rebuild_does_not_resend_unchanged_desired_documents(
    store: EventStore, nc: NatsClient
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sdv_events.desired_signing import DesiredSigner
    from sdv_events.provisioning import DESIRED_BUCKET
    from sdv_events.schemas.packages import PackageInfo
    from sdv_events.schemas.rollouts import (
        DeviceTargeted,
        RolloutCreated,
        Strategy,
        Target,
        Thresholds,
        Timeouts,
    )
    from sdv_orchestrator.projections import DesiredStates

    js = nc.jetstream()
    kv = await js.key_value(DESIRED_BUCKET)
    now = datetime.now(UTC)

    def package(version: str) -> PackageInfo:
        return PackageInfo(name="app", version=version, digest=version[0] * 64, size=1,
                           object_name="o", manifest_digest="m", signature="s", key_id="k",
                           channel="stable", runtime="native", entry_point="main.py",
                           python_version="3.11")

    devices = [f"dev-{i}" for i in range(6)]
    for n, version in enumerate(("1.0.0", "2.0.0")):
        rid = f"r{n}"
        await store.append(f"rollout-{rid}", ANY, [
            RolloutCreated(rollout_id=rid, package=package(version), target=Target(selector="a=b"),
                           strategy=Strategy("canary", ["100%"]), thresholds=Thresholds(1.0, 0.0),
                           timeouts=Timeouts(60, 0), created_at=now),
            # The second rollout reaches half of the devices.
            *[DeviceTargeted(d, 0, now) for d in (devices if n == 0 else devices[:3])],
        ])
    await relay_all(store, js)
    signer = DesiredSigner(Ed25519PrivateKey.generate())
    verifier = signer.verifier()
    desired = DesiredStates(store.schema, kv, signer, store.pool)
    live = await runner_for(store, js, desired, source=StoreSource(store))
    assert await live.catch_up() == "caught_up"

    async def documents() -> dict[str, tuple[int, str]]:
        found = {}
        for d in devices:
            entry = await kv.get(d)
            doc = verifier.open(entry.value or b"", device_id=d)  # every document is signed
            found[d] = (entry.revision, doc.apps["app"].package.version)
        return found

    before = await documents()
    assert [v for _, v in before.values()] == ["2.0.0"] * 3 + ["1.0.0"] * 3
    # One document went missing from KV (deleted by hand); one is the very same document but
    # unsigned (as an orchestrator before signing wrote it, or a forger): agents refuse it, so it
    # differs too — the orchestrator takes nothing unsigned for its own document.
    await kv.delete("dev-4")
    stale = msgspec.json.decode((await kv.get("dev-5")).value or b"{}")["document"]
    await kv.put("dev-5", msgspec.json.encode(stale))
    revision_5 = (await kv.get("dev-5")).revision

    await live.rebuild("store", store=store)
    after = await documents()
    # Unchanged documents were not written again (same KV revision); the two that differed were.
    assert {d: after[d] for d in devices[:4]} == {d: before[d] for d in devices[:4]}
    assert after["dev-4"][1] == "1.0.0"
    assert after["dev-4"][0] > before["dev-4"][0]
    assert after["dev-5"][1] == "1.0.0"
    assert after["dev-5"][0] > revision_5
    # And the document's own revision keeps growing, so agents accept the rewrite.
    doc_5 = verifier.open((await kv.get("dev-5")).value or b"", device_id="dev-5")
    assert doc_5.revision > stale["revision"]
    assert not await store.pool.fetchval(f"SELECT count(*) FROM {store.schema}.desired_dirty")


# ------------------------------------------------------------------ processors


class Recorder:
    """A processor (no transaction): records what it was handed."""

    name = "recorder"
    filter_subjects = ("sdv.evt.tally.*.Added",)

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    async def create(self, conn: asyncpg.Connection) -> None:
        pass

    async def handle(self, events: Sequence[Envelope]) -> None:
        self.seen.extend((e.stream_id, e.version) for e in events)


async def test_a_processor_sees_each_event_once_in_stream_order_across_restarts(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    events = (await store.append("tally-3", ANY, [Added(n) for n in range(6)])).events
    for envelope in events[:3]:
        await publish(js, envelope)
    recorder = Recorder()
    first = await runner_for(store, js, recorder, source=StoreSource(store))
    await first.catch_up()
    for n, envelope in enumerate([events[5], *events]):  # a gap, then everything again
        await publish(js, envelope, msg_id=f"again-{n}")
    second = await runner_for(store, js, recorder, source=StoreSource(store))
    await second.catch_up()
    assert recorder.seen == [("tally-3", v) for v in range(1, 7)]




# ------------------------------------------------------------------ hostile devices, failures, lag


class FactRecorder:
    """A facts processor: records (stream, device) of each AppHealthy; `refuse` names rollout
    ids whose facts fail as the orchestrator's lookup once did (an invalid stream id)."""

    name = "facts"
    filter_subjects = ("sdv.evt.agent.*.AppHealthy",)
    start = "all"

    def __init__(self, *, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.seen: list[tuple[str, str]] = []

    async def create(self, conn: asyncpg.Connection) -> None:
        pass

    async def handle(self, events: Sequence[Envelope]) -> None:
        from sdv_events.ids import stream_id

        for envelope in events:  # a batch fails whole, as a handler that looks everything up first
            if envelope.data.rollout_id == self.refuse:
                stream_id("rollout", envelope.data.rollout_id)  # raises InvalidStreamId
        self.seen.extend((e.stream_id, e.data.device_id) for e in events)


def fact(device: str, event_id: uuid.UUID | None = None, rollout_id: str = "r1") -> Envelope:
    from sdv_events.ids import uuid7
    from sdv_events.schemas.agent import AppHealthy

    body = AppHealthy(device_id=device, app="app", version="2", digest="d" * 64,
                      desired_revision=3, rollout_id=rollout_id)
    return Envelope(event_id=event_id or uuid7(), stream_id=f"agent-{device}", version=1,
                    type="agent.AppHealthy.v1", schema_version=1, occurred_at=datetime.now(UTC),
                    data=body)


async def test_a_device_reusing_another_devices_fact_id_does_not_make_that_fact_a_duplicate(
    store: EventStore, nc: NatsClient
) -> None:
    from sdv_edge_agent.domain.facts import fact_event_id, fact_msg_id

    js = nc.jetstream()
    # The victim's fact id is computable from public facts (device, app, digest, revision).
    victim_id = fact_event_id(fact_msg_id("victim", "app", "d" * 64, 3, "agent.AppHealthy.v1"))
    # The attacker publishes, on its own permitted subject, an envelope carrying that id.
    await publish(js, fact("evil", victim_id), msg_id="evil-1")
    recorder = FactRecorder()
    runner = await runner_for(store, js, recorder)
    assert await runner.catch_up() == "caught_up"
    assert recorder.seen == [("agent-evil", "evil")]

    # Then the victim reports, with its real id: handled, not taken for a duplicate.
    await publish(js, fact("victim", victim_id), msg_id="victim-1")
    assert await runner.catch_up() == "caught_up"
    assert recorder.seen == [("agent-evil", "evil"), ("agent-victim", "victim")]
    assert runner.stats.duplicates == 0
    # Its own fact again (republished past JetStream's window) is the duplicate.
    await publish(js, fact("victim", victim_id), msg_id="victim-1-again")
    assert await runner.catch_up() == "caught_up"
    assert len(recorder.seen) == 2
    assert runner.stats.duplicates == 1


async def test_ledger_setup_upgrades_an_old_schema_once_and_then_never_waits_on_live_consumers(
    store: EventStore, database_url: str
) -> None:
    from sdv_events.processing.ledger import Ledger

    s = store.schema
    # The ledger as an older build left it: facts keyed by id alone, versions without ids.
    await store.pool.execute(f"""
        CREATE TABLE {s}.consumer_streams (consumer text NOT NULL, stream_id text NOT NULL,
            version integer NOT NULL, PRIMARY KEY (consumer, stream_id));
        CREATE TABLE {s}.consumer_events (consumer text NOT NULL, event_id uuid NOT NULL,
            seen_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, event_id));
        INSERT INTO {s}.consumer_streams VALUES ('tally', 'tally-1', 7)""")
    ledger = Ledger(s, "tally")
    await ledger.create(store.pool)
    assert await ledger.versions(store.pool, ["tally-1"]) == {"tally-1": (7, None)}
    assert await ledger.position(store.pool) is None  # the missing table was created

    # A live consumer holds its tables in an open transaction; setup at another start must
    # not take a lock behind it (a no-op DDL would wait here).
    live = await asyncpg.connect(database_url)
    try:
        tx = live.transaction()
        await tx.start()
        await live.execute(f"UPDATE {s}.consumer_streams SET version = 8")
        await live.execute(f"INSERT INTO {s}.consumer_facts (consumer, stream_id, event_id) "
                           "VALUES ('tally', 'agent-x', gen_random_uuid())")
        await live.execute(f"INSERT INTO {s}.consumer_positions (consumer) VALUES ('tally')")
        await asyncio.wait_for(Ledger(s, "other").create(store.pool), 2.0)
        await tx.rollback()
    finally:
        await live.close()


async def test_hostile_facts_are_parked_at_once_and_do_not_delay_the_good_ones(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    for i in range(100):
        await publish(js, fact(f"good{i}"))
        if i % 20 == 0:
            await publish(js, fact("evil", rollout_id="NOT.VALID"))
    recorder = FactRecorder(refuse="NOT.VALID")
    runner = ConsumerRunner(store.pool, store.schema, js, recorder, batch_size=50,
                            fetch_timeout_s=0.2)
    lines = structlog.testing.CapturingLogger()
    runner.log = structlog.wrap_logger(lines, processors=[structlog.processors.KeyValueRenderer()])
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(runner.catch_up(), 30) == "caught_up"
    took = asyncio.get_running_loop().time() - started
    assert len(recorder.seen) == 100
    assert took < 3.0, f"100 good facts took {took:.1f} s behind 5 hostile ones"
    assert runner.stats.parked == 5
    assert runner.stats.retries == 0  # bad data is not retried
    assert len(await dead_letters(js)) == 5
    # One log line per hostile fact, with where it failed, and no traceback.
    assert [call.method_name for call in lines.calls] == ["error"] * 5, lines.calls
    for call in lines.calls:
        [line] = call.args
        assert "event='handler_failed_parked'" in line
        assert "failure='permanent'" in line
        assert "where='ids.py:" in line
        assert "exc_info" not in line
        assert "Traceback" not in line


class Gate:
    """A processor whose `handle` waits until the gate opens."""

    name = "gated"
    filter_subjects = ("sdv.evt.tally.*.Added",)

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.seen = 0

    async def handle(self, events: Sequence[Envelope]) -> None:
        await self.open.wait()
        self.seen += len(events)


async def test_consumer_health_turns_red_when_the_oldest_unhandled_message_is_older_than_the_limit(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    for envelope in (await store.append("tally-1", ANY, [Added(1), Added(2)])).events:
        await publish(js, envelope)
    gate = Gate()
    runner = ConsumerRunner(store.pool, store.schema, js, gate, fetch_timeout_s=0.2,
                            max_lag_s=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.sleep(0.5)
        early = await runner.status()
        assert early.healthy, early  # in hand, but younger than the limit
        await asyncio.sleep(1.2)
        late = await runner.status()
        assert not late.healthy
        assert late.reason.startswith("lagging: the oldest message not yet handled is")
        assert float(late.detail["oldest_unprocessed_age_s"]) > 1.0
        gate.open.set()
        for _ in range(50):
            if gate.seen == 2 and (await runner.status()).healthy:
                break
            await asyncio.sleep(0.1)
        assert gate.seen == 2
        assert (await runner.status()).healthy
    finally:
        gate.open.set()
        stop.set()
        await asyncio.wait_for(task, 10)


class Caller:
    """A processor that asks a service for each event (a policy asking the packager)."""

    name = "caller"
    filter_subjects = ("sdv.evt.tally.*.Added",)

    def __init__(self, client: CommandClient) -> None:
        self.client = client
        self.answers: list[int] = []

    async def create(self, conn: asyncpg.Connection) -> None:
        pass

    async def handle(self, events: Sequence[Envelope]) -> None:
        for envelope in events:
            self.answers.append((await self.client.call("doubler", "double", Score(
                envelope.data.amount), dict))["points"])


async def test_a_handler_waiting_on_an_absent_service_is_retried_until_it_answers_never_parked(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    for envelope in (await store.append("tally-1", ANY, [Added(1), Added(2)])).events:
        await publish(js, envelope)
    caller = Caller(CommandClient(nc, timeout=0.5))
    runner = ConsumerRunner(store.pool, store.schema, js, caller, fetch_timeout_s=0.2,
                            max_attempts=2, retry_initial_s=0.05, retry_max_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        # No doubler answers: far more retries than max_attempts, and nothing parked.
        for _ in range(100):
            if runner.stats.retries >= 6:
                break
            await asyncio.sleep(0.05)
        status = await runner.status()
        assert not status.healthy
        assert status.reason.startswith("waiting on sdv.cmd.doubler.double: ServiceUnavailable")
        assert runner.stats.parked == 0

        async def double(request: Score, _: object) -> dict[str, int]:
            return {"points": request.points * 2}

        async def answer(msg: Msg) -> None:
            await msg.respond(await serve_one(msg.data, msg.subject, msg.headers or {}, Score,
                                              double))

        sub = await nc.subscribe("sdv.cmd.doubler.double", cb=answer)
        try:
            for _ in range(100):
                if len(caller.answers) == 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await sub.unsubscribe()
        assert caller.answers == [2, 4]
        assert runner.stats.parked == 0
        assert (await runner.status()).healthy
        assert await dead_letters(js) == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_refused_request_is_parked_at_once_not_retried(
    store: EventStore, nc: NatsClient
) -> None:
    """The other side of the rule: what the peer refuses is the event's fault, not an outage."""
    js = nc.jetstream()
    for envelope in (await store.append("tally-1", ANY, [Added(1), Added(2)])).events:
        await publish(js, envelope)

    async def refuse(request: Score, _: object) -> dict[str, int]:
        if request.points == 1:
            raise InvalidRequest("one is not doubled")
        return {"points": request.points * 2}

    async def answer(msg: Msg) -> None:
        await msg.respond(await serve_one(msg.data, msg.subject, msg.headers or {}, Score, refuse))

    sub = await nc.subscribe("sdv.cmd.doubler.double", cb=answer)
    try:
        caller = Caller(CommandClient(nc, timeout=2.0))
        runner = await runner_for(store, js, caller)
        assert await runner.catch_up() == "caught_up"
    finally:
        await sub.unsubscribe()
    assert caller.answers == [4]
    assert (runner.stats.parked, runner.stats.retries) == (1, 0)


async def test_a_long_lived_leader_prunes_old_fact_ids_on_a_timer_a_bounded_number_per_round(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    for i in range(10):
        await publish(js, fact(f"dev{i}"))
    recorder = FactRecorder()
    runner = ConsumerRunner(store.pool, store.schema, js, recorder, fetch_timeout_s=0.1,
                            fact_retention_s=1.0, prune_every_s=0.3, prune_batch=4)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))

    async def remembered() -> int:
        return int(await store.pool.fetchval(
            f"SELECT count(*) FROM {store.schema}.consumer_facts WHERE consumer = 'facts'"))

    try:
        for _ in range(100):
            if len(recorder.seen) == 10:
                break
            await asyncio.sleep(0.05)
        assert await remembered() == 10  # younger than the retention: kept
        counts = []
        for _ in range(100):
            counts.append(await remembered())
            if counts[-1] == 0:
                break
            await asyncio.sleep(0.05)
        assert counts[-1] == 0, counts  # forgotten while the same runner kept leading
        assert runner.leading
        assert runner.stats.pruned == 10
        assert 4 in counts or 8 in counts or 6 in counts or 2 in counts, counts  # several rounds
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def envelope_of(event_id: uuid.UUID, version: int, amount: int) -> Envelope:
    return Envelope(event_id=event_id, stream_id="tally-1", version=version,
                    type="constest.Added.v1", schema_version=1, occurred_at=datetime.now(UTC),
                    data=Added(amount))


async def test_the_same_stream_version_under_another_event_id_blocks_the_consumer_as_divergent_history(
    store: EventStore, nc: NatsClient
) -> None:
    """The owner was restored from an older backup and wrote on: its new v3 is not the v3 this
    consumer handled. Dropping it as a duplicate would hide the fork; the consumer stops."""
    from sdv_events.ids import uuid7

    js = nc.jetstream()
    ids = [uuid7() for _ in range(3)]
    for version, event_id in enumerate(ids, start=1):
        await publish(js, envelope_of(event_id, version, version))
    tally = Tally(store.schema)
    runner = await runner_for(store, js, tally)
    assert await runner.catch_up() == "caught_up"
    assert await tally.rows(store.pool) == {"tally-1": (6, [1, 2, 3])}

    # After the restore: v3 and v4 written anew.
    forked = uuid7()
    await publish(js, envelope_of(forked, 3, 30))
    await publish(js, envelope_of(uuid7(), 4, 40))
    assert await runner.catch_up() == "blocked"
    assert await tally.rows(store.pool) == {"tally-1": (6, [1, 2, 3])}  # nothing dropped or applied
    status = await runner.status()
    assert not status.healthy
    assert status.reason == f"divergent history: tally-1 v3 is {ids[2]} here, {forked} on the bus"
    assert await dead_letters(js) == []
    # Not acked, not checkpointed: a restarted consumer stops at the same place.
    again = await runner_for(store, js, tally)
    assert await again.catch_up() == "blocked"
    assert (await again.status()).reason == status.reason
