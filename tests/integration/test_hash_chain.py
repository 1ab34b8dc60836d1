"""Tamper evidence: every store keeps a hash chain per stream; walking it names the first event
that was altered, removed, moved or slipped in past `append_events` — each attack performed on
a real PostgreSQL with the append-only triggers disabled, as only a superuser could."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from sdv_events.registry import event
from sdv_events.store import EventStore
from sdv_events.store.chain import verify_chain
from sdv_events.store.schema import ensure_schema

pytestmark = pytest.mark.timeout(60)


@event("test.ChainTicked")
class Ticked(msgspec.Struct, frozen=True):
    n: int
    note: str = ""


async def _fill(store: EventStore, streams: int = 3, per_stream: int = 5) -> None:
    for s in range(streams):
        for n in range(per_stream):
            await store.append(f"chain-s{s}", n, [Ticked(n, "x" * n)])


async def _as_superuser(store: EventStore, sql: str, *args: object) -> None:
    """What only a superuser (or the schema's owner) can do: change history past the triggers."""
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute(f"ALTER TABLE {store.schema}.events DISABLE TRIGGER USER")
        await conn.execute(sql.replace("{s}", store.schema), *args)
        await conn.execute(f"ALTER TABLE {store.schema}.events ENABLE TRIGGER USER")


async def test_an_untouched_store_verifies_intact_and_every_event_is_chained(store: EventStore) -> None:
    await _fill(store)
    await store.append("chain-big", 0, [Ticked(i) for i in range(50)])  # one append, many links
    report = await verify_chain(store.pool, store.schema)
    assert (report.streams, report.events, report.problems) == (4, 65, [])
    chained = await store.pool.fetchval(f"SELECT count(*) FROM {store.schema}.event_hashes")
    assert chained == 65


async def test_an_edited_event_is_named_as_altered(store: EventStore) -> None:
    await _fill(store)
    victim = (await store.read_stream("chain-s1"))[2]
    await _as_superuser(store, "UPDATE {s}.events SET data = $1 WHERE event_id = $2",
                        b'{"n":2,"note":"forged"}', victim.event_id)
    (problem,) = (await verify_chain(store.pool, store.schema)).problems
    assert (problem.stream_id, problem.version, problem.kind, problem.event_id) == (
        "chain-s1", 3, "altered", victim.event_id)


async def test_a_changed_recording_time_or_actor_is_named_as_altered(store: EventStore) -> None:
    await _fill(store)
    victim = (await store.read_stream("chain-s0"))[0]
    await _as_superuser(store, "UPDATE {s}.events SET recorded_at = recorded_at - interval '1 day' "
                               "WHERE event_id = $1", victim.event_id)
    (problem,) = (await verify_chain(store.pool, store.schema)).problems
    assert (problem.version, problem.kind) == (1, "altered")


async def test_a_deleted_event_is_named_as_removed_also_when_it_was_the_last(store: EventStore) -> None:
    await _fill(store)
    await _as_superuser(store, "DELETE FROM {s}.events WHERE stream_id = 'chain-s0' AND version = 2")
    await _as_superuser(store, "DELETE FROM {s}.events WHERE stream_id = 'chain-s2' AND version = 5")
    problems = {p.stream_id: p for p in (await verify_chain(store.pool, store.schema)).problems}
    assert (problems["chain-s0"].version, problems["chain-s0"].kind) == (2, "removed")
    assert (problems["chain-s2"].version, problems["chain-s2"].kind) == (5, "removed")
    assert "chain-s1" not in problems


async def test_two_swapped_events_are_named_as_moved(store: EventStore) -> None:
    await _fill(store)
    for old, new in ((3, 1000), (4, 3), (1000, 4)):
        await _as_superuser(store, "UPDATE {s}.events SET version = $2 WHERE stream_id = 'chain-s1' "
                                   "AND version = $1", old, new)
    (problem,) = (await verify_chain(store.pool, store.schema)).problems
    assert (problem.stream_id, problem.version, problem.kind) == ("chain-s1", 3, "moved")


async def test_an_event_inserted_past_append_events_is_named_as_unchained(store: EventStore) -> None:
    await _fill(store, streams=1)
    async with store.pool.acquire() as conn:  # a plain INSERT (a service role may insert events)
        await conn.execute(
            f"INSERT INTO {store.schema}.events (stream_id, version, event_id, type, schema_version, data, "
            "metadata, occurred_at) VALUES ('chain-s0', 6, gen_random_uuid(), 'test.ChainTicked.v1', 1, "
            "'{\"n\":6}', '{}', now())")
    (problem,) = (await verify_chain(store.pool, store.schema)).problems
    assert (problem.version, problem.kind) == (6, "unchained")


async def test_the_chain_cannot_be_rewritten_through_its_own_table(store: EventStore) -> None:
    await _fill(store, streams=1)
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await store.pool.execute(f"UPDATE {store.schema}.event_hashes SET hash = 'x'")
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await store.pool.execute(f"DELETE FROM {store.schema}.event_hashes")


async def test_events_recorded_before_the_chain_existed_are_chained_at_the_next_start(store: EventStore) -> None:
    await _fill(store)
    async with store.pool.acquire() as conn:  # the store as an earlier release left it
        await conn.execute(f"DROP TABLE {store.schema}.event_hashes")
        await conn.execute(f"DROP TABLE {store.schema}.chain_backfill")
        await conn.execute(f"DROP FUNCTION {store.schema}.chain_stream(text)")
        await ensure_schema(conn, store.schema)
    report = await verify_chain(store.pool, store.schema)
    assert (report.events, report.problems) == (15, [])
    await store.append("chain-s0", 5, [Ticked(5)])  # and the chain goes on from there
    assert (await verify_chain(store.pool, store.schema)).problems == []
