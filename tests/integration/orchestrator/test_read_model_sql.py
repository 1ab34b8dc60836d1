"""The orchestrator's read-model tables are declared in its numbered `sql/*.sql` files and
nowhere else (its projections hold no DDL), set up again they change nothing, tables an older
build made gain the columns added since; and the device reservations, the write side's guard,
are in none of those files and survive a rebuild of every read model untouched (on a real
PostgreSQL and NATS)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from sdv_events.desired_signing import DesiredSigner
from sdv_events.processing import ConsumerRunner, StoreSource
from sdv_events.processing.rebuild import shadow_schema
from sdv_events.provisioning import DESIRED_BUCKET
from sdv_events.relay import Relay
from sdv_events.schemas.devices import DeviceCameOnline
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceTargeted,
    RolloutCancelled,
    RolloutCreated,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
)
from sdv_events.store import ANY, EventStore
from sdv_events.store.schema import ensure_read_models
from sdv_orchestrator.adapters.reservations import Reservations
from sdv_orchestrator.projections import DesiredStates, Presence, RolloutCatalog

pytestmark = pytest.mark.timeout(120)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# Not rebuilt (a rebuild marks every device for a check after its swap), but declared there too.
OUTBOX = {"desired_dirty"}


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await connection.execute(f"CREATE SCHEMA {schema}")
    yield connection
    await connection.execute(f"DROP SCHEMA {schema} CASCADE")
    await connection.close()


async def tables_of(conn: asyncpg.Connection, schema: str) -> set[str]:
    return {r["tablename"] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)}


async def catalog(conn: asyncpg.Connection, schema: str) -> list[tuple[Any, ...]]:
    """Every column (in order, with type, default, nullability), index and constraint of the
    schema's tables, the schema's name left out."""
    columns = await conn.fetch(
        "SELECT table_name, ordinal_position, column_name, data_type, column_default, is_nullable "
        "FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2", schema)
    indexes = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY 1, 2", schema)
    constraints = await conn.fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = $1::regnamespace ORDER BY 1, 2", schema)
    return [tuple(str(v).replace(schema, "<schema>") for v in r) for r in [*columns, *indexes, *constraints]]


def projections(schema: str, js: JetStreamContext | None = None) -> list[Any]:
    signer = DesiredSigner(Ed25519PrivateKey.generate())
    return [RolloutCatalog(schema), Presence(schema),
            DesiredStates(schema, None, signer)]  # type: ignore[arg-type]  # no KV: no documents


async def test_the_orchestrators_read_tables_come_only_from_its_sql_files(
        conn: asyncpg.Connection, schema: str) -> None:
    parts = projections(schema)
    await ensure_read_models(conn, "sdv_orchestrator", schema)
    declared = {t for p in parts for t in p.tables}
    assert await tables_of(conn, schema) == declared | OUTBOX
    assert "reservations" not in await tables_of(conn, schema)  # the write side's, not here
    first = await catalog(conn, schema)

    # Each projection sets up exactly those files (no DDL of its own), again changing nothing.
    for part in parts:
        await part.create(conn)
        assert await catalog(conn, schema) == first

    # A rebuild's shadow schema (longest name) gets the same.
    for part in parts:
        shadow = shadow_schema(schema, part.name)
        try:
            async with conn.transaction():
                await conn.execute(f"CREATE SCHEMA {shadow}")
                await part.at(shadow).create(conn)
            assert await catalog(conn, shadow) == first
        finally:
            await conn.execute(f"DROP SCHEMA IF EXISTS {shadow} CASCADE")


OLD_TABLES = """
    CREATE TABLE {s}.rollouts (
        rollout_id text PRIMARY KEY, app text NOT NULL, version text NOT NULL,
        status text NOT NULL, devices integer NOT NULL DEFAULT 0,
        succeeded integer NOT NULL DEFAULT 0, failed integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
    INSERT INTO {s}.rollouts VALUES ('r-old', 'nav', '1.0.0', 'rolled_back', 3, 1, 2, now(), now()),
                                    ('r-done', 'nav', '0.9.0', 'completed', 3, 3, 0, now(), now());
    CREATE TABLE {s}.device_apps (
        device_id text NOT NULL, app text NOT NULL, package bytea NOT NULL,
        rollout_id text, PRIMARY KEY (device_id, app));
    INSERT INTO {s}.device_apps VALUES ('d1', 'nav', '\\x7b7d', 'r-done');
    CREATE TABLE {s}.reservations (
        device_id text NOT NULL, app text NOT NULL, rollout_id text NOT NULL,
        PRIMARY KEY (device_id, app));
    CREATE INDEX reservations_rollout ON {s}.reservations (rollout_id);
    INSERT INTO {s}.reservations VALUES ('d1', 'nav', 'r-live');"""


async def test_tables_an_older_build_made_gain_the_later_columns_and_keep_their_rows(
        conn: asyncpg.Connection, schema: str) -> None:
    """`rollouts` from before `rollback_open` and `schedule`, `device_apps` from before
    `rollback` and `held`, and the reservations the old catalog's DDL made: set up by this
    build, they have the columns of new tables in the same order, a rolled back rollout is
    still followed by the ticker, and no row is lost."""
    s = schema
    await conn.execute(OLD_TABLES.format(s=s))
    await ensure_read_models(conn, "sdv_orchestrator", s)
    await Reservations(s).create(conn)

    rows = {r["rollout_id"]: (r["status"], r["rollback_open"], r["schedule"])
            for r in await conn.fetch(f"SELECT * FROM {s}.rollouts")}
    assert rows == {"r-old": ("rolled_back", True, None), "r-done": ("completed", False, None)}
    app = await conn.fetchrow(f"SELECT * FROM {s}.device_apps")
    assert (app["device_id"], app["rollout_id"], app["rollback"], app["held"]) == ("d1", "r-done", False, False)
    assert await conn.fetch(f"SELECT device_id, app, rollout_id FROM {s}.reservations") == [
        ("d1", "nav", "r-live")]

    fresh = f"{s}_fresh"
    try:
        await conn.execute(f"CREATE SCHEMA {fresh}")
        await ensure_read_models(conn, "sdv_orchestrator", fresh)
        await Reservations(fresh).create(conn)
        assert await catalog(conn, s) == await catalog(conn, fresh)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {fresh} CASCADE")


def package(version: str) -> PackageInfo:
    return PackageInfo(name="nav", version=version, digest=version[0] * 64, size=1, object_name="o",
                       manifest_digest="m", signature="s", key_id="k", channel="stable",
                       runtime="native", entry_point="main.py", python_version="3.11")


def created(rollout_id: str, version: str) -> RolloutCreated:
    return RolloutCreated(rollout_id=rollout_id, package=package(version),
                          target=Target(device_ids=["d1", "d2"]), strategy=Strategy("all-at-once"),
                          thresholds=Thresholds(1.0, 0.0), timeouts=Timeouts(60, 0), created_at=NOW)


async def relay_all(store: EventStore, js: JetStreamContext) -> None:
    total = int(await store.pool.fetchval(f"SELECT max(global_position) FROM {store.schema}.events"))
    stop = asyncio.Event()
    task = asyncio.create_task(Relay(store, js, batch_size=100, idle_poll_s=0.02).run(stop))
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


async def test_rebuilding_every_orchestrator_read_model_leaves_the_reservations_untouched(
        store: EventStore, nc: NatsClient) -> None:
    """A cancelled rollout and a live one; the live one holds its devices, and a crash left a
    row of the cancelled one (the next start clears it, asking the store). Rebuilding the
    catalog (which replays the cancel), the desired states and the presence from PostgreSQL
    changes neither row, and the rebuilt catalog has both rollouts."""
    js = nc.jetstream()
    await store.append("rollout-r-old", ANY, [created("r-old", "1.0.0"), DeviceTargeted("d1", 0, NOW),
                                              RolloutCancelled(reason="by operator", at=NOW)])
    await store.append("rollout-r-live", ANY, [created("r-live", "2.0.0"), DeviceTargeted("d2", 0, NOW)])
    await store.append("device-d2", ANY, [DeviceCameOnline(device_id="d2", seen_at=NOW)])
    await relay_all(store, js)
    signer = DesiredSigner(Ed25519PrivateKey.generate())
    parts: list[Any] = [RolloutCatalog(store.schema), Presence(store.schema, store.pool),
                        DesiredStates(store.schema, await js.key_value(DESIRED_BUCKET), signer, store.pool)]
    runners = []
    for part in parts:
        async with store.pool.acquire() as conn:
            await part.create(conn)
        runner = ConsumerRunner(store.pool, store.schema, js, part, batch_size=10,
                                fetch_timeout_s=0.2, source=StoreSource(store))
        assert await runner.catch_up() == "caught_up"
        runners.append(runner)
    reservations = Reservations(store.schema)
    async with store.pool.acquire() as conn:
        await reservations.create(conn)
        await reservations.reserve(conn, "r-live", "nav", ["d2"])
        await reservations.reserve(conn, "r-old", "nav", ["d1"])  # left behind by a crash
    before = sorted(tuple(r) for r in await store.pool.fetch(
        f"SELECT device_id, app, rollout_id FROM {store.schema}.reservations"))
    assert before == [("d1", "nav", "r-old"), ("d2", "nav", "r-live")]

    for runner in runners:
        await asyncio.wait_for(runner.rebuild("store", store=store), 60)

    after = sorted(tuple(r) for r in await store.pool.fetch(
        f"SELECT device_id, app, rollout_id FROM {store.schema}.reservations"))
    assert after == before
    statuses = {r["rollout_id"]: r["status"] for r in await store.pool.fetch(
        f"SELECT rollout_id, status FROM {store.schema}.rollouts")}
    assert statuses == {"r-old": "cancelled", "r-live": "created"}
    assert await parts[1].of(["d2"]) == {"d2": True}


async def test_a_rollouts_end_releases_its_reservations_as_it_is_appended_with_no_projection_running(
        store: EventStore) -> None:
    """The write side releases what it reserved: a cancel, once stored, frees the rollout's
    devices (no read model runs here); another rollout's reservations stay."""
    from sdv_orchestrator.application import Orchestrator
    from sdv_orchestrator.domain.rollout_commands import CreateRollout, StartRollout

    orchestrator = Orchestrator(store, peers=None, desired=None)  # type: ignore[arg-type]
    async with store.pool.acquire() as conn:
        await orchestrator.reservations.create(conn)
        await orchestrator.reservations.reserve(conn, "r1", "nav", ["d1", "d2"])
        await orchestrator.reservations.reserve(conn, "r2", "other", ["d1"])
    await orchestrator.run("r1", CreateRollout(rollout_id="r1", package=package("1.0.0"),
                                               target=Target(device_ids=["d1", "d2"]),
                                               strategy=Strategy(kind="all-at-once"), now=NOW))
    await orchestrator.run("r1", StartRollout(device_ids=["d1", "d2"], now=NOW))
    await orchestrator.pause("r1")
    held = await store.pool.fetch(f"SELECT rollout_id FROM {store.schema}.reservations ORDER BY 1")
    assert [r["rollout_id"] for r in held] == ["r1", "r1", "r2"]  # paused: still its devices

    assert (await orchestrator.cancel("r1")).status == "cancelled"
    held = await store.pool.fetch(f"SELECT rollout_id FROM {store.schema}.reservations ORDER BY 1")
    assert [r["rollout_id"] for r in held] == ["r2"]
