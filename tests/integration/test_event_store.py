"""The PostgreSQL event store on a real server: appends, optimistic concurrency, immutability, reads."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest

from sdv_events.envelope import Metadata, TraceContext
from sdv_events.errors import ConcurrencyConflict
from sdv_events.ids import InvalidStreamId
from sdv_events.registry import EventRegistry, event
from sdv_events.store import ANY, NO_STREAM, EventStore, ensure_schema

REG = EventRegistry()


@event("storetest.Registered", registry=REG)
class Registered(msgspec.Struct, frozen=True):
    device_id: str
    model: str


@event("storetest.Renamed", registry=REG)
class Renamed(msgspec.Struct, frozen=True):
    name: str


@pytest.fixture
def es(store: EventStore) -> EventStore:
    """The fixture's store (own schema, own pool) reading and writing this module's event types."""
    return EventStore(store.pool, store.schema, registry=REG)


async def test_append_and_read_stream_round_trip(es: EventStore) -> None:
    meta = Metadata(
        correlation_id="rollout-9",
        causation_id="cmd-123",
        actor="alice",
        trace=TraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=1"),
    )

    result = await es.append(
        "device-car-1", NO_STREAM, [Registered("car-1", "mk2"), Renamed("Blue")], metadata=meta
    )

    assert result.next_version == 2
    assert [e.version for e in result.events] == [1, 2]
    assert len(result.positions) == 2
    assert result.positions == sorted(result.positions)
    stored = await es.read_stream("device-car-1")
    assert [e.data for e in stored] == [Registered("car-1", "mk2"), Renamed("Blue")]
    assert [e.type for e in stored] == ["storetest.Registered.v1", "storetest.Renamed.v1"]
    assert [e.event_id for e in stored] == [e.event_id for e in result.events]
    assert [e.position for e in stored] == result.positions
    assert all(e.metadata == meta for e in stored)
    assert all(e.occurred_at == result.events[0].occurred_at for e in stored)
    assert stored == result.events
    assert await es.stream_version("device-car-1") == 2


async def test_read_stream_from_version_and_missing_stream(es: EventStore) -> None:
    await es.append("device-car-2", NO_STREAM, [Renamed(f"n{i}") for i in range(5)])

    tail = await es.read_stream("device-car-2", from_version=4)

    assert [(e.version, e.data) for e in tail] == [(4, Renamed("n3")), (5, Renamed("n4"))]
    assert await es.read_stream("device-nobody") == []
    assert await es.stream_version("device-nobody") == 0


async def test_streams_are_independent(es: EventStore) -> None:
    await es.append("device-a", NO_STREAM, [Renamed("a1")])
    await es.append("device-b", NO_STREAM, [Renamed("b1"), Renamed("b2")])
    await es.append("device-a", 1, [Renamed("a2")])

    assert [e.data.name for e in await es.read_stream("device-a")] == ["a1", "a2"]
    assert [e.version for e in await es.read_stream("device-b")] == [1, 2]


async def test_failing_batch_appends_none_of_its_events(es: EventStore) -> None:
    first = await es.append("device-car-3", NO_STREAM, [Renamed("kept")])
    taken_id = first.events[0].event_id
    now = es.clock()
    batch = [
        es.wrap("device-car-3", 2, Renamed("lost-1"), Metadata(), now),
        es.wrap("device-car-3", 3, Renamed("lost-2"), Metadata(), now),
    ]
    batch[1] = msgspec.structs.replace(batch[1], event_id=taken_id)  # second event collides

    with pytest.raises(asyncpg.UniqueViolationError):
        await es.append_envelopes("device-car-3", 1, batch)

    assert [e.data for e in await es.read_stream("device-car-3")] == [Renamed("kept")]
    assert [e.event_id async for e in es.read_all()] == [taken_id]
    # The stream is still writable at the version it really has.
    assert (await es.append("device-car-3", 1, [Renamed("next")])).next_version == 2


async def test_stale_expected_version_conflicts_and_appends_nothing(es: EventStore) -> None:
    await es.append("device-car-4", NO_STREAM, [Renamed("a"), Renamed("b")])

    with pytest.raises(ConcurrencyConflict) as info:
        await es.append("device-car-4", 1, [Renamed("stale")])

    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("device-car-4", 1, 2)
    assert "device-car-4" in str(info.value)
    assert await es.stream_version("device-car-4") == 2


async def test_two_concurrent_appenders_exactly_one_wins(es: EventStore) -> None:
    stream = "device-race"
    await es.append(stream, NO_STREAM, [Renamed("v1"), Renamed("v2"), Renamed("v3")])
    for round_ in range(5):
        both_read = asyncio.Barrier(2)

        async def writer(name: str, both_read: asyncio.Barrier = both_read) -> int:
            version = len(await es.read_stream(stream))
            await both_read.wait()  # both decide on the same version before either appends
            result = await es.append(stream, version, [Renamed(name), Renamed(name + "-bis")])
            return result.next_version

        n = await es.stream_version(stream)
        outcomes = await asyncio.gather(writer(f"x{round_}"), writer(f"y{round_}"), return_exceptions=True)

        wins = [o for o in outcomes if isinstance(o, int)]
        conflicts = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
        assert wins == [n + 2], outcomes
        assert len(conflicts) == 1, outcomes
        assert (conflicts[0].expected, conflicts[0].actual) == (n, n + 2)
        events = await es.read_stream(stream)
        assert [e.version for e in events] == list(range(1, n + 3))
        # The winner's two events are adjacent: batches never interleave.
        assert events[-1].data.name == events[-2].data.name + "-bis"


async def test_no_stream_refuses_an_existing_stream(es: EventStore) -> None:
    await es.append("device-ns", NO_STREAM, [Renamed("first")])

    with pytest.raises(ConcurrencyConflict) as info:
        await es.append("device-ns", NO_STREAM, [Renamed("second")])

    assert (info.value.expected, info.value.actual) == (NO_STREAM, 1)
    assert await es.stream_version("device-ns") == 1


async def test_any_appends_whatever_the_version(es: EventStore) -> None:
    created = await es.append("device-any", ANY, [Renamed("a")])
    await es.append("device-any", 1, [Renamed("b"), Renamed("c")])

    result = await es.append("device-any", ANY, [Renamed("d"), Renamed("e")])

    assert created.next_version == 1
    assert result.next_version == 5
    # The envelopes returned carry the versions they really got, not ones guessed from ANY.
    assert [e.version for e in result.events] == [4, 5]
    stored = await es.read_stream("device-any")
    assert [(e.version, e.data.name) for e in stored] == [(i + 1, n) for i, n in enumerate("abcde")]
    assert stored[-2:] == result.events


async def test_empty_append_returns_the_current_version(es: EventStore) -> None:
    await es.append("device-empty", NO_STREAM, [Renamed("a")])
    result = await es.append("device-empty", 1, [])
    assert (result.next_version, result.positions, result.events) == (1, [], [])
    with pytest.raises(ConcurrencyConflict):
        await es.append("device-empty", 7, [])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {s}.events SET type = 'forged.v1'",
        "UPDATE {s}.events SET data = 'x'::bytea WHERE version = 1",
        "DELETE FROM {s}.events",
        "DELETE FROM {s}.events WHERE version = 2",
        "TRUNCATE {s}.events",
    ],
)
async def test_events_table_is_append_only(es: EventStore, statement: str) -> None:
    await es.append("device-audit", NO_STREAM, [Registered("car-9", "mk1"), Renamed("Red")])
    before = await es.pool.fetch(f"SELECT * FROM {es.schema}.events ORDER BY global_position")

    with pytest.raises(asyncpg.PostgresError) as info:
        await es.pool.execute(statement.format(s=es.schema))

    assert info.value.sqlstate == "SDV02"
    assert "append-only" in str(info.value)
    after = await es.pool.fetch(f"SELECT * FROM {es.schema}.events ORDER BY global_position")
    assert after == before
    assert [e.data for e in await es.read_stream("device-audit")] == [
        Registered("car-9", "mk1"),
        Renamed("Red"),
    ]


async def test_schema_setup_is_idempotent_and_keeps_data(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await ensure_schema(conn, schema)
        first = EventStore(
            await asyncpg.create_pool(database_url, min_size=1, max_size=2), schema, registry=REG
        )
        try:
            await first.append("device-keep", NO_STREAM, [Renamed("survives")])
            await ensure_schema(conn, schema)
            await ensure_schema(conn, schema)
            assert [e.data for e in await first.read_stream("device-keep")] == [Renamed("survives")]
            with pytest.raises(asyncpg.PostgresError):  # the trigger survived re-creation
                await first.pool.execute(f"DELETE FROM {schema}.events")
        finally:
            await first.close()
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def test_concurrent_schema_setup_on_a_fresh_schema(database_url: str, schema: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(5)]
    try:
        await asyncio.gather(*(ensure_schema(c, schema) for c in conns))

        tables = await conns[0].fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", schema
        )
        assert [t["table_name"] for t in tables] == ["chain_backfill", "checkpoints", "commands", "event_hashes",
                                                   "events", "idempotency_keys"]
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        es = EventStore(pool, schema, registry=REG)
        try:
            assert (await es.append("device-x", NO_STREAM, [Renamed("ok")])).next_version == 1
        finally:
            await es.close()
    finally:
        await conns[0].execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        for c in conns:
            await c.close()


async def test_schema_names_are_validated(database_url: str) -> None:
    for bad in ("Bad", "a-b", "x; DROP TABLE y", "t_ok\n", ""):
        with pytest.raises(ValueError, match="invalid schema name"):
            await EventStore.open(database_url, bad)


async def test_read_all_in_position_order_across_batches(es: EventStore) -> None:
    appended: list[uuid.UUID] = []
    positions: list[int] = []
    for i in range(23):
        stream = f"device-{i % 4}"
        result = await es.append(stream, ANY, [Renamed(f"e{i}")])
        appended += [e.event_id for e in result.events]
        positions += result.positions

    everything = [e async for e in es.read_all(batch_size=5)]

    assert [e.event_id for e in everything] == appended
    assert [e.position for e in everything] == positions
    assert positions == sorted(set(positions))
    # A batch size that divides the total exactly ends cleanly too.
    assert len([e async for e in es.read_all(batch_size=23)]) == 23
    assert len([e async for e in es.read_all(batch_size=1)]) == 23


async def test_read_all_from_position_resumes_after_it(es: EventStore) -> None:
    result = await es.append("device-r", NO_STREAM, [Renamed(f"e{i}") for i in range(12)])

    resumed = [e async for e in es.read_all(from_position=result.positions[6], batch_size=4)]

    assert [e.data.name for e in resumed] == [f"e{i}" for i in range(7, 12)]
    assert [e async for e in es.read_all(from_position=result.positions[-1])] == []


@pytest.mark.parametrize("bad", ["Device-1", "device", "device-a.b", "device-*", "device-1\n", ""])
async def test_stream_ids_are_validated_and_nothing_is_written(es: EventStore, bad: str) -> None:
    with pytest.raises(InvalidStreamId):
        await es.append(bad, ANY, [Renamed("x")])
    assert [e async for e in es.read_all()] == []


async def test_unregistered_event_body_is_refused_before_writing(es: EventStore) -> None:
    class NotAnEvent(msgspec.Struct):
        x: int

    with pytest.raises(TypeError, match="not a registered event type"):
        await es.append("device-t", ANY, [Renamed("ok"), NotAnEvent(1)])
    assert await es.stream_version("device-t") == 0


async def test_schema_setup_does_not_wait_for_an_append_in_flight(es: EventStore, database_url: str) -> None:
    """Setup runs at every start while other replicas append: it must not lock `events`
    (a no-op CREATE INDEX IF NOT EXISTS / CREATE OR REPLACE TRIGGER would, until it commits)."""
    writer = await asyncpg.connect(database_url)
    starter = await asyncpg.connect(database_url)
    try:
        async with writer.transaction():
            await writer.fetchrow(
                f"SELECT * FROM {es.schema}.append_events($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                "note-open", -1, [uuid.uuid4()], ["storetest.Noted.v1"], [1], [b'{"text":"x"}'],
                [b"{}"], [datetime.now(UTC)], None, None)
            await asyncio.wait_for(ensure_schema(starter, es.schema), timeout=5.0)
    finally:
        await writer.close()
        await starter.close()


async def test_a_position_sequence_cache_is_reset_so_tailers_cannot_skip(es: EventStore, database_url: str) -> None:
    """With CACHE 20, session A drew 1 and 2 while B drew 21: a tailer read [1, 21] and never 2.
    Setup (at every start, and after a pg_dump restore that carried the setting) puts it back."""
    await es.pool.execute(f"ALTER SEQUENCE {es.schema}.events_global_position_seq CACHE 20")
    conn = await asyncpg.connect(database_url)
    try:
        await ensure_schema(conn, es.schema)
        cache = await conn.fetchval(
            "SELECT cache_size FROM pg_sequences WHERE schemaname = $1 "
            "AND sequencename = 'events_global_position_seq'", es.schema)
    finally:
        await conn.close()
    assert cache == 1
