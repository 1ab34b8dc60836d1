"""A logical restore of a running service's event store into a fresh PostgreSQL continues where
it left off: nothing skipped, nothing on the bus twice (what the dump missed is republished and
deduplicated by `Nats-Msg-Id`).

(Regression: the relay's cursor was a transaction id; a fresh cluster hands out lower ones, so
every append after the restore sat below the checkpoint and was skipped forever.)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
from nats.aio.client import Client as NatsClient

from sdv_events.relay import Relay
from sdv_events.servers import PostgresServer
from sdv_events.servers.postgres import _bin_dir
from sdv_events.store import ANY, EventStore

support = sys.modules["sdv_relay_test_support"]
Ticked = support.Ticked


async def _append(store: EventStore, n: int, offset: int) -> None:
    for i in range(n):
        await store.append(f"thing-{i % 7}", ANY, [Ticked(0, offset + i)])


async def _publish_all(store: EventStore, js: object) -> Relay:
    relay = support.RelayTask(Relay(store, js, batch_size=64, idle_poll_s=0.02))
    last = await store.pool.fetchval(f"SELECT max(global_position) FROM {store.schema}.events")

    async def caught_up() -> bool:
        return await relay.relay.checkpoint() == last

    try:
        await support.wait_until(caught_up, timeout=20, what="the relay to publish everything")
    finally:
        await relay.close()
    return relay.relay


async def _burn_xids_above(database_url: str, floor: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        current = int(await conn.fetchval("SELECT pg_current_xact_id()::text"))
        if current < floor:
            await conn.execute("SET synchronous_commit = off")
            await conn.execute(f"DO $$ BEGIN FOR i IN 1..{floor - current} LOOP "
                               "PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$")
    finally:
        await conn.close()


async def test_pg_dump_restored_into_a_fresh_cluster_continues_without_a_skip(
    nc: NatsClient, schema: str, tmp_path: Path
) -> None:
    # Source and target are clusters of the test's own, with the same binaries as pg_dump.
    with PostgresServer() as source:
        store = await EventStore.open(source.url, schema)
        try:
            await _dump_and_restore(store, nc, source.url, tmp_path)
        finally:
            await store.close()


async def _dump_and_restore(store: EventStore, nc: NatsClient, database_url: str, tmp_path: Path
                            ) -> None:
    js = nc.jetstream()
    # The source cluster must be "older" than a fresh one, as a real one is.
    await _burn_xids_above(database_url, 5_000)
    await _append(store, 300, 0)
    await _publish_all(store, js)
    await _append(store, 100, 300)  # appended, not yet published when the dump is taken

    dump = tmp_path / "events.dump"
    bin_dir = _bin_dir()
    await asyncio.to_thread(subprocess.run, [str(bin_dir / "pg_dump"), "-Fc", "--schema", store.schema,
                            "-f", str(dump), database_url], check=True, capture_output=True)
    await _publish_all(store, js)  # the old cluster goes on publishing after the dump
    assert await support.stream_count(js) == 400

    with PostgresServer() as fresh:
        restore = await asyncio.to_thread(
            subprocess.run, [str(bin_dir / "pg_restore"), "--no-owner", "-d", fresh.url, str(dump)],
            capture_output=True, text=True)
        assert restore.returncode == 0, restore.stderr
        restored = await EventStore.open(fresh.url, store.schema)
        try:
            fresh_xid = int(await restored.pool.fetchval("SELECT pg_current_xact_id()::text"))
            stored_xid = int(await restored.pool.fetchval(
                f"SELECT max(tx_id)::text FROM {store.schema}.events"))
            assert fresh_xid < stored_xid, "the fresh cluster should hand out lower transaction ids"
            await _append(restored, 50, 400)  # written after the restore
            relay = await _publish_all(restored, js)
            expected = await support.store_events(restored)
        finally:
            await restored.close()

    assert len(expected) == 450
    assert relay.stats.duplicates == 100, "what the dump had not seen published should be deduplicated"
    assert relay.stats.published == 50
    msgs = await support.read_events(js)
    assert len(msgs) == 450
    support.assert_exactly_once_in_order(msgs, expected)
