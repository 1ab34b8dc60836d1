"""A service's history from its PostgreSQL store over the bus (`sdv.cmd.<service>.history`),
and the commit-ordered `read_all(after=)` it rests on.

Real PostgreSQL and a NATS server of each test's own; the service runs in-process through the
real `run_service` runtime, its events written by a store on the same schema.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from typer.testing import CliRunner, Result

from sdv_client.cli import app as cli_app
from sdv_events.bus import CommandClient, InvalidRequest, ServiceUnavailable
from sdv_events.bus.rpc import Reply, ReplyError, ReplyOk, error_from_reply
from sdv_events.codec import decode_as, encode, encode_metadata
from sdv_events.envelope import Envelope, Metadata, TraceContext
from sdv_events.history import PAGE_BYTES, HistoryPage, HistoryQuery, history_pages, read_history
from sdv_events.registry import EventRegistry, event
from sdv_events.service import ServiceSettings, run_service, wait_until_ready
from sdv_events.store import ANY, NO_STREAM, EventStore
from sdv_events.subjects import command_subject

pytestmark = pytest.mark.timeout(120)

REG = EventRegistry()
SERVICE = "chronicle"


@event("historytest.Noted", registry=REG)
class Noted(msgspec.Struct, frozen=True):
    text: str


@event("historytest.Blob", registry=REG)
class Blob(msgspec.Struct, frozen=True):
    payload: str


@dataclass
class Served:
    store: EventStore
    nc: NatsClient
    client: CommandClient


@pytest.fixture
async def served(fresh_nats_url: str, database_url: str, schema: str, store: EventStore
                 ) -> AsyncIterator[Served]:
    settings = ServiceSettings(service=SERVICE, nats_url=fresh_nats_url, database_url=database_url,
                               schema_name=schema, log_level="WARNING")
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(SERVICE, settings, stop=stop))
    nc = await nats.connect(fresh_nats_url)
    await wait_until_ready(nc, SERVICE, task=task)
    yield Served(EventStore(store.pool, store.schema, registry=REG), nc,
                 CommandClient(nc, actor="auditor", timeout=10.0))
    stop.set()
    await asyncio.wait_for(task, 20)
    await nc.drain()


async def history(served: Served, query: HistoryQuery) -> list[Envelope]:
    return [e async for e in read_history(served.client, SERVICE, query, registry=REG)]


def ids(events: list[Envelope]) -> list[uuid.UUID]:
    return [e.event_id for e in events]


async def db_now(store: EventStore) -> datetime:
    value: datetime = await store.pool.fetchval("SELECT clock_timestamp()")
    return value


def meta(n: int) -> Metadata:
    return Metadata(correlation_id=f"corr-{n}", causation_id=f"cmd-{n}", actor=f"user-{n % 3}",
                    trace=TraceContext(f"00-{n:032x}-{n:016x}-01"))


async def test_history_pages_by_stream_category_position_and_time_return_every_event_once_in_commit_order_with_metadata(
    served: Served,
) -> None:
    es = served.store
    streams = ["note-a", "note-b", "memo-c"]
    before_all = await db_now(es)
    for n in range(30):  # interleaved, some appends of several events
        stream = streams[n % 3]
        await es.append(stream, ANY, [Noted(f"{n}.{i}") for i in range(1 + n % 2)], metadata=meta(n))
    mid = await db_now(es)
    await asyncio.sleep(0.01)
    for n in range(30, 45):
        await es.append(streams[n % 3], ANY, [Noted(str(n))], metadata=meta(n))
    everything = [e async for e in es.read_all()]
    assert len(everything) == 60

    # By stream, paged 4 at a time: the stream's events, versions 1…n, each once, metadata kept.
    pages = [p async for p in history_pages(served.client, SERVICE,
                                            HistoryQuery(stream_id="note-a", limit=4))]
    assert len(pages) > 3
    assert all(len(p.events) <= 4 for p in pages)
    assert [p.more for p in pages] == [True] * (len(pages) - 1) + [False]
    by_stream = [e.envelope(REG) for p in pages for e in p.events]
    expected = await es.read_stream("note-a")
    assert by_stream == expected
    assert [e.version for e in by_stream] == list(range(1, len(expected) + 1))
    assert all(before_all <= e.recorded_at for p in pages for e in p.events)
    n0 = int(by_stream[0].data.text.split(".")[0])
    assert (by_stream[0].actor, by_stream[0].correlation_id, by_stream[0].causation_id,
            by_stream[0].trace) == (meta(n0).actor, meta(n0).correlation_id,
                                    meta(n0).causation_id, meta(n0).trace)

    # From a version on (what a consumer healing a gap asks).
    tail = await history(served, HistoryQuery(stream_id="note-a", from_version=5, limit=3))
    assert tail == expected[4:]

    # By category: both note streams, in commit order.
    notes = await history(served, HistoryQuery(category="note", limit=7))
    assert notes == [e for e in everything if e.stream_id.startswith("note-")]

    # By position range: after is exclusive, to inclusive.
    lo, hi = everything[9].position, everything[40].position
    ranged = await history(served, HistoryQuery(after=lo, to=hi, limit=5))
    assert ranged == everything[10:41]

    # By recording time: exactly the events appended in [before_all, mid), then from mid on.
    early = await history(served, HistoryQuery(since=before_all, until=mid, limit=9))
    late = await history(served, HistoryQuery(since=mid, limit=9))
    assert ids(early) + ids(late) == ids(everything)
    assert [e.data.text for e in late] == [str(n) for n in range(30, 45)]

    # Everything, each once, in commit order, then nothing after the last position.
    whole = await history(served, HistoryQuery(limit=11))
    assert ids(whole) == ids(everything)
    assert len(set(ids(whole))) == 60
    last = await served.client.call(SERVICE, "history", HistoryQuery(after=everything[-1].position),
                                    HistoryPage)
    assert (last.events, last.next_after, last.more) == ([], everything[-1].position, False)


async def test_a_history_page_never_exceeds_the_payload_bound_with_200_kb_events(
    served: Served,
) -> None:
    es = served.store
    blobs = [Blob(random.choice("abcdef") * 200_000) for _ in range(9)]
    for i, blob in enumerate(blobs):
        await es.append(f"blob-{i % 2}", ANY, [blob, Noted(f"small {i}")], metadata=meta(i))
    after, sizes, seen = 0, [], []
    while True:
        msg = await served.nc.request(command_subject(SERVICE, "history"),
                                      encode(HistoryQuery(after=after, limit=1000)), timeout=10)
        sizes.append(len(msg.data))
        page = decode_as(bytes(decode_as(msg.data, ReplyOk).result), HistoryPage)
        assert page.events, "a page holds at least one event"
        seen += [e.envelope(REG) for e in page.events]
        if not page.more:
            break
        after = page.next_after
    assert max(sizes) <= PAGE_BYTES, sizes
    assert len(sizes) >= 4  # 9 x 200 KB do not fit in fewer pages of 512 KiB
    assert [e.data for e in seen] == [body for i, b in enumerate(blobs) for body in (b, Noted(f"small {i}"))]


async def test_a_history_page_holds_one_event_larger_than_the_page_bound(
    served: Served, database_url: str,
) -> None:
    big = EventStore(served.store.pool, served.store.schema, registry=REG, max_event_bytes=800_000)
    await big.append("blob-big", NO_STREAM, [Blob("x" * 700_000), Blob("y" * 10)])
    pages = [p async for p in history_pages(served.client, SERVICE, HistoryQuery(limit=50))]
    assert [len(p.events) for p in pages] == [1, 1]
    assert pages[0].events[0].envelope(REG).data == Blob("x" * 700_000)



async def open_append(raw: asyncpg.Connection, schema: str, stream: str, text: str) -> uuid.UUID:
    """An append whose transaction stays open: it holds a position that is not visible yet."""
    event_id = uuid.uuid4()
    await raw.fetchrow(
        f"SELECT * FROM {schema}.append_events($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        stream, -1, [event_id], ["historytest.Noted.v1"], [1], [encode(Noted(text))],
        [encode_metadata(Metadata())], [datetime.now(UTC)], None, None,
    )
    return event_id


async def test_history_waits_for_an_append_in_flight_below_its_page_and_never_skips_it(
    served: Served, database_url: str,
) -> None:
    es = served.store
    raw = await asyncpg.connect(database_url)
    try:
        tx = raw.transaction()
        await tx.start()
        a_id = await open_append(raw, es.schema, "note-a", "A")
        b = await es.append("note-b", ANY, [Noted("B")])  # a higher position, committed first
        asking = asyncio.create_task(history(served, HistoryQuery()))
        await asyncio.sleep(0.5)
        assert not asking.done()  # B is not served above A's open position
        await tx.commit()
        events = await asyncio.wait_for(asking, 10)
    finally:
        await raw.close()
    assert ids(events) == [a_id, b.events[0].event_id]


async def test_history_answers_unavailable_while_an_append_stays_open_too_long(
    served: Served, database_url: str,
) -> None:
    raw = await asyncpg.connect(database_url)
    try:
        tx = raw.transaction()
        await tx.start()
        await open_append(raw, served.store.schema, "note-a", "A")
        with pytest.raises(ServiceUnavailable, match="try again"):
            await history(served, HistoryQuery())
        await tx.rollback()
    finally:
        await raw.close()
    assert await history(served, HistoryQuery()) == []


async def test_read_all_tail_never_skips_under_concurrent_writers(store: EventStore) -> None:
    es = EventStore(store.pool, store.schema, registry=REG)
    writers, appends = 8, 40
    done = asyncio.Event()

    async def write(w: int) -> None:
        rng = random.Random(w)
        for n in range(appends):
            # Own streams and one shared stream, batches of 1 to 3: appends contend on the lock.
            stream = "note-shared" if n % 4 == 0 else f"note-w{w}"
            await es.append(stream, ANY, [Noted(f"{w}.{n}.{i}") for i in range(rng.randint(1, 3))])

    tailed: list[Envelope] = []

    async def tail() -> None:
        cursor = 0
        while True:
            finished = done.is_set()  # read once more after the writers finished
            batch = [e async for e in es.read_all(after=cursor, batch_size=7)]
            tailed.extend(batch)
            if batch:
                cursor = batch[-1].position
            elif finished:
                return
            await asyncio.sleep(0)

    tailer = asyncio.create_task(tail())
    await asyncio.gather(*(write(w) for w in range(writers)))
    tailed_while_writing = len(tailed)
    done.set()
    await asyncio.wait_for(tailer, 30)

    final = [e async for e in es.read_all()]
    assert len(final) >= writers * appends
    assert tailed_while_writing > 0  # the tailer read while appends were in flight
    assert ids(tailed) == ids(final)  # the same events, each once, in the same order
    positions = [e.position for e in tailed]
    assert positions == sorted(set(positions))
    versions: dict[str, list[int]] = defaultdict(list)
    for e in tailed:
        versions[e.stream_id].append(e.version)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    # Old callers keep working: from_position is the old name of after.
    assert ids([e async for e in es.read_all(from_position=positions[9])]) == ids(final[10:])
    assert await es.head() == positions[-1]


async def test_read_all_by_category_and_position_range(store: EventStore) -> None:
    es = EventStore(store.pool, store.schema, registry=REG)
    for n in range(12):
        await es.append(["note_x-1", "notex-1", "memo-1"][n % 3], ANY, [Noted(str(n))])
    everything = [e async for e in es.read_all()]
    # '_' in a category is no wildcard: note_x does not match notex.
    assert [e.stream_id async for e in es.read_category("note_x")] == ["note_x-1"] * 4
    assert await es.stream_ids("note_x") == ["note_x-1"]
    ranged = [e async for e in es.read_all(after=everything[2].position,
                                           to=everything[7].position, batch_size=2)]
    assert ids(ranged) == ids(everything[3:8])


@pytest.mark.parametrize(("query", "reason"), [
    ({"limit": 0}, "limit_out_of_bounds"),
    ({"limit": 5000}, "limit_out_of_bounds"),
    ({"after": -1}, "negative_position"),
    ({"after": 10, "to": 5}, "inverted_range"),
    ({"since": "2026-11-30T12:00:00Z", "until": "2026-11-30T11:00:00Z"}, "inverted_range"),
    ({"stream_id": "Not A Stream"}, "bad_stream_id"),
    ({"stream_id": "note-a", "category": "note"}, "conflicting_filters"),
    ({"from_version": 3}, "conflicting_filters"),
    ({"stream_id": "note-a", "from_version": 0}, "bad_version"),
    ({"category": "Note-"}, "bad_category"),
    ({"since": "2026-11-30T12:00:00"}, "wrong_type"),  # no time zone
    ({"limit": "ten"}, "wrong_type"),
    ({"after": 2**63}, "out_of_range"),
    ({"stream_id": "note-a", "from_version": 2**31}, "out_of_range"),
])
async def test_bad_history_queries_get_invalid_request_with_a_reason(
    served: Served, query: dict[str, object], reason: str,
) -> None:
    msg = await served.nc.request(command_subject(SERVICE, "history"), encode(query), timeout=10)
    reply = decode_as(msg.data, Reply)  # type: ignore[arg-type]
    assert isinstance(reply, ReplyError), reply
    error = error_from_reply(reply)
    assert isinstance(error, InvalidRequest)
    assert error.details["reason"] == reason, error.details


async def test_the_history_client_raises_invalid_request(served: Served) -> None:
    with pytest.raises(InvalidRequest, match="limit"):
        await history(served, HistoryQuery(limit=0))


async def sdv(url: str, *args: str) -> Result:
    """`sdv <args>` with SDV_NATS_URL=url, off the event loop (the CLI runs its own)."""
    return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args),
                                   env={"SDV_NATS_URL": url, "COLUMNS": "200"})


async def test_sdv_history_lists_a_services_events_with_who_caused_them(
    served: Served, fresh_nats_url: str,
) -> None:
    for n in range(5):
        await served.store.append("note-a", ANY, [Noted(f"n{n}")], metadata=meta(n))
    await served.store.append("memo-b", ANY, [Noted("memo")], metadata=meta(9))

    result = await sdv(fresh_nats_url, "history", SERVICE, "--stream", "note-a", "--limit", "3",
                       "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert [e["data"] for e in doc["events"]] == [{"text": "n0"}, {"text": "n1"}, {"text": "n2"}]
    assert [(e["version"], e["actor"], e["correlation_id"], e["causation_id"])
            for e in doc["events"]] == [(n + 1, f"user-{n}", f"corr-{n}", f"cmd-{n}")
                                        for n in range(3)]
    assert doc["more"] is True
    rest = await sdv(fresh_nats_url, "history", SERVICE, "--stream", "note-a", "--after",
                     str(doc["next_after"]), "--json")
    assert [e["data"]["text"] for e in json.loads(rest.stdout)["events"]] == ["n3", "n4"]
    assert json.loads(rest.stdout)["more"] is False

    table = await sdv(fresh_nats_url, "history", SERVICE, "--category", "memo",
                      "--since", "2000-01-01T00:00:00Z")
    assert table.exit_code == 0, table.stdout + table.stderr
    for text in ("memo-b", "Noted", "user-0", "corr-9", "1 event(s)"):
        assert text in table.stdout


async def test_sdv_history_refuses_bad_input_with_its_exit_codes(
    served: Served, fresh_nats_url: str,
) -> None:
    usage = await sdv(fresh_nats_url, "history", SERVICE, "--since", "yesterday")
    assert usage.exit_code == 2
    refused = await sdv(fresh_nats_url, "history", SERVICE, "--after", "9", "--to", "3", "--json")
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["code"] == "invalid_request"
    nobody = await sdv(fresh_nats_url, "history", "nosuchservice", "--json")
    assert nobody.exit_code == 3


async def test_sdv_rebuild_names_the_read_models_a_service_has(served: Served, fresh_nats_url: str) -> None:
    """A service with no read model of that name says so (exit 1, not_found), in JSON too."""
    refused = await sdv(fresh_nats_url, "rebuild", SERVICE, "no_such_model", "--json")
    assert refused.exit_code == 1, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["code"] == "not_found"
