"""Idempotency keys through the bus and the real store: the same key and request get the first
outcome and ids, another request is a `Conflict`, keys are per command, expire and are pruned,
and the schema upgrade from global command ids keeps their outcomes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta

import asyncpg
import msgspec
import nats
import pytest
from faststream.nats import NatsRouter
from nats.aio.client import Client as NatsClient

from sdv_events.bus import CommandClient, Conflict, RequestInfo, make_broker, register_command
from sdv_events.bus.rpc import COMMAND_ID_HEADER, ReplyOk
from sdv_events.codec import decode_as, encode
from sdv_events.commands import Accepted, Refused, handle_command
from sdv_events.decider import Decider
from sdv_events.errors import DomainError
from sdv_events.idempotency import idempotency_key, key_pruner
from sdv_events.ids import split_stream_id
from sdv_events.registry import EventRegistry, event
from sdv_events.store import EventStore
from sdv_events.store.schema import ensure_schema

REG = EventRegistry()


# --- a toy "notes" service: `write` generates the note's id when the request names none --------
@event("idemtest.NoteWritten", registry=REG)
class NoteWritten(msgspec.Struct, frozen=True):
    text: str
    tags: dict[str, str]


class Write(msgspec.Struct, frozen=True):
    text: str
    tags: dict[str, str] = {}
    note_id: str | None = None


class Note(msgspec.Struct, frozen=True):
    note_id: str
    texts: list[str]


def decide(command: Write, state: list[str]) -> Sequence[NoteWritten]:
    if not command.text:
        raise DomainError("a note needs text", code="invalid_request")
    return [NoteWritten(command.text, command.tags)]


def evolve(state: list[str], e: NoteWritten) -> list[str]:
    return [*state, e.text]


notes = Decider(initial=[], decide=decide, evolve=evolve)
Serve = Callable[[EventStore], Awaitable[str]]


@pytest.fixture
def es(store: EventStore) -> EventStore:
    return EventStore(store.pool, store.schema, registry=REG)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client: NatsClient = await nats.connect(nats_url)
    yield client
    await client.drain()


@pytest.fixture
async def serve(nats_url: str) -> AsyncIterator[Serve]:
    """Serve `write` and `append` (the same handler under two command names) of a fresh service."""
    brokers = []

    async def start(store: EventStore) -> str:
        async def write(req: Write, info: RequestInfo) -> Note:
            outcome = await handle_command(store, notes, f"note-{req.note_id or uuid.uuid4().hex}",
                                           req, key=info.idempotency_key, metadata=info.metadata())
            assert isinstance(outcome, Accepted), outcome
            state = [e.data.text for e in await store.read_stream(outcome.stream_id)]
            return Note(split_stream_id(outcome.stream_id)[1], state)

        service = f"notes{uuid.uuid4().hex[:8]}"
        broker = make_broker(nats_url, service)
        router = NatsRouter()
        register_command(router, service, "write", Write, write)
        register_command(router, service, "append", Write, write)
        broker.include_router(router)
        await broker.start()
        brokers.append(broker)
        await broker.connection.flush()  # twice: see test_rpc.py's `serve`
        await broker.connection.flush()
        return service

    yield start
    for broker in brokers:
        await broker.stop()


async def event_count(store: EventStore) -> int:
    return len([e async for e in store.read_all()])


# --- through the bus ------------------------------------------------------------------------------


async def test_reused_command_id_with_another_body_is_a_conflict(
    serve: Serve, es: EventStore, nc: NatsClient
) -> None:
    service = await serve(es)
    client = CommandClient(nc, timeout=5.0)
    await client.call(service, "write", Write("first", note_id="n1"), Note, command_id="k-1")

    with pytest.raises(Conflict) as info:
        await client.call(service, "write", Write("second", note_id="n1"), Note, command_id="k-1")

    assert info.value.details == {"command": f"sdv.cmd.{service}.write", "command_id": "k-1"}
    assert "k-1" in info.value.message
    assert [e.data.text for e in await es.read_stream("note-n1")] == ["first"]


async def test_a_retry_gets_the_first_outcome_and_the_ids_generated_for_it(
    serve: Serve, es: EventStore, nc: NatsClient
) -> None:
    service = await serve(es)
    client = CommandClient(nc, timeout=5.0)

    first = await client.call(service, "write", Write("hello"), Note, command_id="k-2")
    again = await client.call(service, "write", Write("hello"), Note, command_id="k-2")

    assert again == first  # the note the first attempt created, not a second one
    assert first.texts == ["hello"]
    assert await event_count(es) == 1


async def test_the_fingerprint_is_of_the_request_not_of_its_json_spelling(
    serve: Serve, es: EventStore, nc: NatsClient
) -> None:
    service = await serve(es)
    subject = f"sdv.cmd.{service}.write"
    spellings = [
        b'{"text": "x", "tags": {"a": "1", "b": "2"}, "note_id": "n3"}',
        b'{"note_id":"n3","tags":{"b":"2","a":"1"},"text":"x"}',
    ]

    replies = [await nc.request(subject, body, timeout=5.0, headers={COMMAND_ID_HEADER: "k-3"})
               for body in spellings]

    results = [json.loads(bytes(decode_as(r.data, ReplyOk).result)) for r in replies]
    assert results[0] == results[1] == {"note_id": "n3", "texts": ["x"]}
    assert await event_count(es) == 1


async def test_same_command_id_on_another_command_is_an_independent_key(
    serve: Serve, es: EventStore, nc: NatsClient
) -> None:
    service = await serve(es)
    client = CommandClient(nc, timeout=5.0)

    await client.call(service, "write", Write("one", note_id="n4"), Note, command_id="k-4")
    other = await client.call(service, "append", Write("two", note_id="n4"), Note, command_id="k-4")

    assert other.texts == ["one", "two"]


# --- rejections, expiry, pruning (the command runner on the real store) --------------------------


async def test_a_rejection_is_not_final_the_same_key_passes_when_retried_later(es: EventStore) -> None:
    """The request is the same, the state changed (here: the decider's rules, as after a fix)."""
    def refuse(command: Write, state: list[str]) -> Sequence[NoteWritten]:
        raise DomainError("not now", code="unavailable")

    strict = Decider(initial=[], decide=refuse, evolve=evolve)
    key = idempotency_key("sdv.cmd.notes.write", "k-5", Write("later"))

    refused = await handle_command(es, strict, "note-n5", Write("later"), key=key)
    passed = await handle_command(es, notes, "note-n5", Write("later"), key=key)

    assert refused == Refused("note-n5", "unavailable", "not now")
    assert isinstance(passed, Accepted)
    assert not passed.duplicate


async def test_an_expired_key_is_a_new_key_even_before_it_is_pruned(es: EventStore) -> None:
    short = EventStore(es.pool, es.schema, registry=REG, idempotency_ttl=timedelta(milliseconds=200))
    await handle_command(short, notes, "note-n6", Write("a"),
                         key=idempotency_key("sdv.cmd.notes.write", "k-6", Write("a")))
    await asyncio.sleep(0.3)

    reused = await handle_command(short, notes, "note-n6", Write("b"),
                                  key=idempotency_key("sdv.cmd.notes.write", "k-6", Write("b")))

    assert isinstance(reused, Accepted)
    assert not reused.duplicate
    assert [e.data.text for e in await es.read_stream("note-n6")] == ["a", "b"]


async def test_an_expired_key_is_pruned_and_then_treated_as_new(es: EventStore) -> None:
    short = EventStore(es.pool, es.schema, registry=REG, idempotency_ttl=timedelta(milliseconds=300))
    live = EventStore(es.pool, es.schema, registry=REG)  # the default TTL: a day
    expiring = idempotency_key("sdv.cmd.notes.write", "k-7", Write("a"))
    await handle_command(short, notes, "note-n7", Write("a"), key=expiring)
    await handle_command(live, notes, "note-n8", Write("kept"),
                         key=idempotency_key("sdv.cmd.notes.write", "k-8", Write("kept")))
    stop = asyncio.Event()
    pruner = asyncio.create_task(key_pruner(short, every_s=0.05)(stop))

    async def keys() -> list[str]:
        rows = await es.pool.fetch(f"SELECT command_id FROM {es.schema}.idempotency_keys")
        return sorted(r["command_id"] for r in rows)

    try:
        for _ in range(100):
            if await keys() == ["k-8"]:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await pruner
    assert await keys() == ["k-8"]  # the expired key pruned, the live one kept
    reused = await handle_command(short, notes, "note-n7", Write("b"),
                                  key=idempotency_key("sdv.cmd.notes.write", "k-7", Write("b")))
    assert isinstance(reused, Accepted)
    assert not reused.duplicate
    assert [e.data.text for e in await es.read_stream("note-n7")] == ["a", "b"]


async def test_the_pruner_outlives_a_failing_round(es: EventStore, database_url: str) -> None:
    """Pruning is not urgent (expired keys are already ignored): a database it cannot reach is
    retried at its next round, not counted as a failing task that would stop the service."""
    unreachable = await EventStore.open(database_url, es.schema)
    await unreachable.close()
    stop = asyncio.Event()
    pruner = asyncio.create_task(key_pruner(unreachable, every_s=0.01)(stop))

    await asyncio.sleep(0.2)

    assert not pruner.done()
    stop.set()
    await asyncio.wait_for(pruner, 5.0)


# --- schema --------------------------------------------------------------------------------------

OLD_APPEND_EVENTS = """
CREATE FUNCTION {schema}.append_events(
    p_stream text, p_expected integer, p_ids uuid[], p_types text[], p_schema_versions smallint[],
    p_data bytea[], p_meta bytea[], p_occurred timestamptz[], p_command_id text, p_outcome bytea
) RETURNS TABLE (next_version integer, positions bigint[]) LANGUAGE sql
AS $$ SELECT 0, ARRAY[]::bigint[] $$
"""


async def test_schema_upgrade_from_global_command_ids_keeps_their_outcomes(
    es: EventStore, database_url: str
) -> None:
    """A store of the previous release: global command ids in `commands` (an acceptance and a
    rejection), the 10-argument `append_events`, no `idempotency_keys`. Setup runs at start."""
    accepted = Accepted("note-old", 1, [uuid.uuid4()], ["idemtest.NoteWritten.v1"])
    async with es.pool.acquire() as conn:
        await conn.execute(f"DROP TABLE {es.schema}.idempotency_keys")
        await conn.execute(f"DROP FUNCTION {es.schema}.append_events")
        await conn.execute(OLD_APPEND_EVENTS.replace("{schema}", es.schema))
        await conn.executemany(
            f"INSERT INTO {es.schema}.commands (command_id, stream_id, outcome) VALUES ($1, $2, $3)",
            [("old-ok", "note-old", encode(accepted)),
             ("old-no", "note-old", encode(Refused("note-old", "invalid_request", "no")))])

    for _ in range(2):  # every start
        async with es.pool.acquire() as conn:
            await ensure_schema(conn, es.schema)

    replay = await handle_command(es, notes, "note-other", Write("x"),
                                  key=idempotency_key("sdv.cmd.notes.write", "old-ok", Write("x")))
    retried = await handle_command(es, notes, "note-old", Write("y"),
                                   key=idempotency_key("sdv.cmd.notes.write", "old-no", Write("y")))
    assert replay == msgspec.structs.replace(accepted, duplicate=True)
    assert isinstance(retried, Accepted)  # a recorded rejection was never final
    overloads = await es.pool.fetchval(
        "SELECT count(*) FROM pg_proc WHERE proname = 'append_events' "
        "AND pronamespace = $1::regnamespace", es.schema)
    assert overloads == 1
    # A replica of the previous release (10 arguments, a global id) still appends, in `commands`.
    await es.pool.fetchrow(
        f"SELECT * FROM {es.schema}.append_events($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        "note-legacy", -1, [], [], [], [], [], [], "old-writer", encode(accepted))
    assert await es.pool.fetchval(
        f"SELECT stream_id FROM {es.schema}.commands WHERE command_id = 'old-writer'") == "note-legacy"


async def test_schema_setup_does_not_wait_for_a_transaction_binding_a_key(
    es: EventStore, database_url: str
) -> None:
    """Setup runs at every start while other replicas append; touching `idempotency_keys` then
    (CREATE INDEX IF NOT EXISTS locks the table even when the index exists) would wait for them."""
    writer = await asyncpg.connect(database_url)
    starter = await asyncpg.connect(database_url)
    try:
        async with writer.transaction():
            await writer.execute(
                f"INSERT INTO {es.schema}.idempotency_keys "
                "(command, command_id, fingerprint, stream_id, outcome, expires_at) "
                "VALUES ('c', 'open', 'f', 'note-x', '', now() + interval '1 day')")
            await asyncio.wait_for(ensure_schema(starter, es.schema), timeout=5.0)
    finally:
        await writer.close()
        await starter.close()
