"""The monitor's read-model tables are declared in its numbered `sql/*.sql` files and nowhere
else: set up in an empty schema they are exactly the projection's tables, setting them up
again changes nothing, a rebuild's shadow schema gets the same, and a table made before a
column was added gains it (on a real PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest

from sdv_events.envelope import Envelope
from sdv_events.processing.rebuild import shadow_schema
from sdv_events.registry import default_registry
from sdv_events.schemas.rollouts import DeviceRolledBack, RollbackCompleted
from sdv_events.store.schema import ensure_read_models
from sdv_monitor.projections import MonitorViews

pytestmark = pytest.mark.timeout(60)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROLLBACK_COLUMNS = ("rolled_back", "rollback_unconfirmed", "rollback_completed_at")


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
    schema's tables, the schema's name left out (index names embed it)."""
    columns = await conn.fetch(
        "SELECT table_name, ordinal_position, column_name, data_type, column_default, is_nullable "
        "FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2", schema)
    indexes = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY 1, 2", schema)
    constraints = await conn.fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = $1::regnamespace ORDER BY 1, 2", schema)
    return [tuple(str(v).replace(schema, "<schema>") for v in r) for r in [*columns, *indexes, *constraints]]


def envelope(stream_id: str, version: int, body: msgspec.Struct) -> Envelope:
    type_name, schema_version = default_registry.describe(body)
    return Envelope(event_id=uuid.uuid4(), stream_id=stream_id, version=version, type=type_name,
                    schema_version=schema_version, occurred_at=T0, data=body, actor="operator")


async def test_the_monitors_tables_come_only_from_its_sql_files_and_setting_up_twice_changes_nothing(
        conn: asyncpg.Connection, schema: str) -> None:
    views = MonitorViews(schema)
    assert not [type(p).__name__ for p in views.parts if hasattr(p, "create")]  # no DDL in the parts

    await ensure_read_models(conn, "sdv_monitor", schema)
    assert await tables_of(conn, schema) == set(views.tables)
    assert len(views.tables) == len(set(views.tables))
    first = await catalog(conn, schema)
    await conn.execute(f"INSERT INTO {schema}.packages (name, version, digest, channel, runtime, size, "
                       "key_id, published_at, updated_at) VALUES ('nav', '1.0.0', 'd', 'stable', "
                       "'native', 1, 'k', now(), now())")

    await ensure_read_models(conn, "sdv_monitor", schema)
    await views.create(conn)
    assert await catalog(conn, schema) == first
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.packages") == 1

    # A rebuild's shadow schema (longest name, index names embedding it), set up as the
    # rebuild does: `create` of the projection at the shadow, in the rebuild's transaction.
    shadow = shadow_schema(schema, views.name)
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE SCHEMA {shadow}")
            await views.at(shadow).create(conn)
        assert await tables_of(conn, shadow) == set(views.tables)
        assert await catalog(conn, shadow) == first
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {shadow} CASCADE")


OLD_ROLLOUTS = """
    CREATE TABLE {s}.rollouts (
        rollout_id text PRIMARY KEY, app text NOT NULL, version text NOT NULL,
        digest text NOT NULL, status text NOT NULL, created_by text NOT NULL DEFAULT '',
        target text NOT NULL DEFAULT '', strategy text NOT NULL DEFAULT '',
        devices integer NOT NULL DEFAULT 0, waves integer NOT NULL DEFAULT 0,
        excluded integer NOT NULL DEFAULT 0, current_wave integer NOT NULL DEFAULT -1,
        succeeded integer NOT NULL DEFAULT 0, failed integer NOT NULL DEFAULT 0,
        timed_out integer NOT NULL DEFAULT 0, reason text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
        ended_at timestamptz);
    CREATE INDEX {s}_rollouts_app ON {s}.rollouts (app, created_at);
    INSERT INTO {s}.rollouts (rollout_id, app, version, digest, status, devices, failed, created_at,
                              updated_at)
        VALUES ('r-old', 'nav', '2.0.0', 'd', 'rolled_back', 3, 1, now(), now());"""


async def test_a_rollouts_table_from_before_the_rollback_columns_gains_them_and_counts_rollbacks(
        conn: asyncpg.Connection, schema: str) -> None:
    """The rollouts table as the monitor made it before per-device rollback outcomes (its rows
    kept): set up again, it has the three columns, with their defaults for the old rows, the
    same columns in the same order as a new table, and the rollback events land in them."""
    s = schema
    await conn.execute(OLD_ROLLOUTS.format(s=s))
    views = MonitorViews(s)
    await views.create(conn)

    columns = [r["column_name"] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 "
        "AND table_name = 'rollouts' ORDER BY ordinal_position", s)]
    assert tuple(columns[-5:-2]) == ROLLBACK_COLUMNS
    assert tuple(columns[-2:]) == ("waiting_reason", "waiting_until")  # added since, in order
    row = await conn.fetchrow(f"SELECT * FROM {s}.rollouts WHERE rollout_id = 'r-old'")
    assert (row["status"], row["devices"], row["failed"]) == ("rolled_back", 3, 1)
    assert (row["rolled_back"], row["rollback_unconfirmed"], row["rollback_completed_at"]) == (0, 0, None)

    fresh = f"{s}_fresh"
    try:
        await conn.execute(f"CREATE SCHEMA {fresh}")
        await MonitorViews(fresh).create(conn)
        assert await catalog(conn, s) == await catalog(conn, fresh)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {fresh} CASCADE")

    for event in [envelope("rollout-r-old", 10, DeviceRolledBack("d1", 0)),
                  envelope("rollout-r-old", 11, RollbackCompleted(rolled_back=1, unconfirmed=0, at=T0))]:
        async with conn.transaction():
            await views.apply(conn, event)
    row = await conn.fetchrow(f"SELECT * FROM {s}.rollouts WHERE rollout_id = 'r-old'")
    assert (row["rolled_back"], row["rollback_unconfirmed"], row["rollback_completed_at"]) == (1, 0, T0)
