"""The relay cannot die silently, and nothing outside its schema holds it back.

Real PostgreSQL, a NATS server of each test's own. The stream under the relay is deleted and
recreated while writers append; a transaction is left open in another database; an event far
over the bound is offered; nats-server is SIGKILLed in the middle of a pipelined batch.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient

from sdv_events.codec import WireEnvelope, encode_metadata
from sdv_events.envelope import Metadata
from sdv_events.errors import EventTooLarge
from sdv_events.provisioning import EVENTS_STREAM, provision
from sdv_events.registry import event
from sdv_events.relay import Relay
from sdv_events.servers import NatsServer
from sdv_events.store import ANY, EventStore

support = sys.modules["sdv_relay_test_support"]
Ticked = support.Ticked


@event("relaytest.Blob")
class Blob(msgspec.Struct, frozen=True):
    text: str


async def _positions_on_stream(js: object) -> list[int]:
    return [msgspec.json.decode(m.data, type=WireEnvelope).position
            for m in await support.read_events(js)]


async def test_stream_deleted_and_recreated_under_load_every_later_event_published_once(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    relay = support.RelayTask(Relay(store, js, batch_size=50, idle_poll_s=0.02,
                                    backoff_initial_s=0.05, backoff_max_s=0.3))
    writing = asyncio.Event()
    writing.set()

    async def writer(w: int) -> None:
        n = 0
        while writing.is_set():
            await store.append(f"thing-{w}", ANY, [Ticked(w, n)])
            n += 1
            await asyncio.sleep(0.002)

    writers = [asyncio.create_task(writer(w)) for w in range(4)]
    try:
        await support.wait_until(lambda: _at_least(js, 100), timeout=10, what="100 events out")
        await js.delete_stream(EVENTS_STREAM)
        # Appends go on; every publish fails meanwhile, and the relay says so.
        await support.wait_until(lambda: _async_true(relay.relay.stats.errors > 0), timeout=15,
                                 what="the relay to meet the missing stream")
        await asyncio.sleep(1.0)
        errors_while_gone = relay.relay.stats.errors
        assert "stream" in (relay.relay.stats.last_error or "").lower(), relay.relay.stats.last_error
        await provision(js)
        await asyncio.sleep(1.0)
        writing.clear()
        await asyncio.gather(*writers)
        last = await store.pool.fetchval(f"SELECT max(global_position) FROM {store.schema}.events")

        async def caught_up() -> bool:
            return await relay.relay.checkpoint() == last

        await support.wait_until(caught_up, timeout=20, what="the relay to catch up after the stream came back")
        status = await relay.relay.status()
    finally:
        writing.clear()
        await relay.close()

    assert errors_while_gone > 0, "publishing into a deleted stream raised nothing"
    assert relay.task.exception() is None
    assert status.healthy, status
    assert status.detail["behind"] == 0
    # The new stream holds a contiguous tail of the log — every event the relay had not
    # published into the old stream before it was deleted — exactly once and in order.
    positions = await _positions_on_stream(js)
    all_positions = [r[0] for r in await store.pool.fetch(
        f"SELECT global_position FROM {store.schema}.events ORDER BY global_position")]
    assert positions, "nothing reached the recreated stream"
    assert positions == all_positions[all_positions.index(positions[0]):]
    assert len(positions) > 50


async def _async_true(value: bool) -> bool:
    return value


async def _at_least(js: object, n: int) -> bool:
    return await support.stream_count(js) >= n


async def test_idle_transaction_in_another_database_does_not_hold_the_relay(
    store: EventStore, nc: NatsClient, database_url: str
) -> None:
    """`pg_snapshot_xmin` is cluster-wide; a cursor built on it stalled while any transaction
    anywhere in the cluster stayed open. Positions are not held back by strangers."""
    js = nc.jetstream()
    other_db = f"sdv_other_{store.schema}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE DATABASE {other_db}")
    # The URL's query (e.g. its passfile) may hold slashes too: replace its path only.
    stranger = await asyncpg.connect(urlunsplit(urlsplit(database_url)._replace(path=f"/{other_db}")))
    relay = support.RelayTask(Relay(store, js, batch_size=50, idle_poll_s=0.02))
    try:
        tx = stranger.transaction()
        await tx.start()
        await stranger.fetchval("SELECT pg_current_xact_id()")  # holds an xid, and xmin with it
        # A projection-like transaction of this very database and schema, also left open.
        local = await store.pool.acquire()
        local_tx = local.transaction()
        await local_tx.start()
        await local.fetchval("SELECT pg_current_xact_id()")
        loop = asyncio.get_running_loop()
        started = loop.time()
        lags = []
        for n in range(20):  # 10 s with both transactions open
            appended = loop.time()
            await store.append("thing-idle", ANY, [Ticked(0, n)])
            await support.wait_until(lambda n=n: _at_least(js, n + 1), timeout=5,
                                     what=f"event {n} out while the transactions stay open")
            lags.append(loop.time() - appended)
            await asyncio.sleep(max(0.0, started + (n + 1) * 0.5 - loop.time()))
        await local_tx.rollback()
        await store.pool.release(local)
        await tx.rollback()
    finally:
        await relay.close()
        await stranger.close()
        await admin.execute(f"DROP DATABASE {other_db} WITH (FORCE)")
        await admin.close()
    assert loop.time() - started >= 9.5
    assert max(lags) < 1.0, f"publish lag while strangers' transactions stayed open: {max(lags):.2f}s"


async def test_ten_megabyte_event_is_refused_at_append_with_a_typed_error(store: EventStore) -> None:
    await store.append("thing-big", 0, [Ticked(0, 1)])
    with pytest.raises(EventTooLarge) as refused:
        await store.append("thing-big", 1, [Ticked(0, 2), Blob("x" * 10_000_000)])
    assert refused.value.limit == store.max_event_bytes
    assert refused.value.size > 10_000_000
    assert refused.value.type_name == "relaytest.Blob.v1"
    assert "nothing was appended" in str(refused.value)
    # Nothing of that append was stored (not even the small event before it); the stream goes on.
    assert await store.stream_version("thing-big") == 1
    await store.append("thing-big", 1, [Ticked(0, 3)])
    assert await store.stream_version("thing-big") == 2


async def test_table_refuses_a_row_the_relay_could_never_publish(store: EventStore) -> None:
    """Defence in depth: a writer that bypasses `append`'s check meets the table's bound."""
    with pytest.raises(asyncpg.CheckViolationError):
        await store.pool.fetchrow(
            f"SELECT * FROM {store.schema}.append_events($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
            "thing-raw", -1, [uuid.uuid4()], [support.TICKED], [1], [b'"' + b"x" * 2_000_000 + b'"'],
            [encode_metadata(Metadata())], [datetime.now(UTC)], None, None,
        )
    assert await store.stream_version("thing-raw") == 0


async def test_nats_server_killed_mid_batch_keeps_per_stream_order_on_the_stream(
    store: EventStore, tmp_path: Path
) -> None:
    server = NatsServer(store_dir=tmp_path).start()
    port = server.port
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    js = client.jetstream()
    await provision(js)
    rng = random.Random(5)
    for n in range(150):  # a backlog of 6,000 events over 40 streams
        await store.append(f"thing-{rng.randrange(40)}", ANY, [Ticked(0, n * 40 + k) for k in range(40)])
    relay = support.RelayTask(Relay(store, js, batch_size=500, idle_poll_s=0.02,
                                    backoff_initial_s=0.05, backoff_max_s=0.5, ack_timeout_s=2.0))
    restarted = None
    try:
        await support.wait_until(lambda: _at_least(js, 1500), timeout=20, what="a first part out")
        assert server.process is not None
        server.process.kill()  # SIGKILL in the middle of pipelined batches
        server.process.wait()
        await asyncio.sleep(0.5)
        restarted = NatsServer(port=port, store_dir=tmp_path).start()
        total = await store.pool.fetchval(f"SELECT count(*) FROM {store.schema}.events")

        async def caught_up() -> bool:
            return await relay.relay.checkpoint() == await store.pool.fetchval(
                f"SELECT max(global_position) FROM {store.schema}.events")

        await support.wait_until(caught_up, timeout=60, what="the relay to finish after the restart")
        msgs = await support.read_events(js)
    finally:
        await relay.close()
        await client.close()
        if restarted is not None:
            restarted.stop()
        server.stop()
    seen: dict[str, list[int]] = {}
    for m in msgs:
        wire = msgspec.json.decode(m.data, type=WireEnvelope)
        seen.setdefault(wire.stream_id, []).append(wire.version)
    for stream_id, versions in seen.items():
        assert versions == sorted(versions), f"{stream_id} out of order on the stream: {versions[:50]}"
        assert len(versions) == len(set(versions)), f"{stream_id} has duplicates"
    # Whatever the kill lost was published again: every event is on the stream.
    assert sum(len(v) for v in seen.values()) == total
