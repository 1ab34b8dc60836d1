"""Idempotent schema setup: numbered `.sql` files applied under an advisory lock; or, where
the schema's owner sets it up (`sdv up` with a role per service, store/roles.py), a check at
start that it did. A service's read models are declared the same way, in its own `sql` folder,
and set up by the service itself (it owns them: store/roles.py)."""

from __future__ import annotations

import re
from importlib import resources

import asyncpg

from sdv_events.errors import SdvError

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
# A read model's schema may also be a rebuild's shadow (processing/rebuild.py), up to
# PostgreSQL's identifier length.
_READ_MODEL_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class SchemaNotSetUp(SdvError):
    """The event store's schema is missing or out of this role's reach, and this process may
    not set it up itself."""


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_RE.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r}: lowercase letters, digits and '_' only")
    return schema


def sql_scripts(package: str, schema: str) -> list[str]:
    """The numbered `.sql` files of `package`'s `sql` folder, in order, with `{schema}` set: the
    event store's own (`sdv_events.store`), or a service's read models (`sdv_registry`)."""
    if not _READ_MODEL_SCHEMA_RE.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r}: lowercase letters, digits and '_' only")
    folder = resources.files(package) / "sql"
    scripts = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [p.read_text().replace("{schema}", schema) for p in scripts]


def schema_sql(schema: str) -> list[str]:
    return sql_scripts("sdv_events.store", check_schema_name(schema))


async def ensure_read_models(conn: asyncpg.Connection, package: str, schema: str) -> None:
    """Create or update the read-model tables `package`'s `.sql` files declare in `schema`
    (idempotent); concurrent replicas serialize on the schema. Runs inside the caller's
    transaction when there is one (a rebuild sets up its shadow schema in one)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"sdv_read_models:{schema}")
        for sql in sql_scripts(package, schema):
            await conn.execute(sql)


async def ensure_schema(conn: asyncpg.Connection, schema: str) -> None:
    """Create or update a service's event-store schema; concurrent callers serialize."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sdv_schema_setup'))")
        for sql in schema_sql(schema):
            await conn.execute(sql)


async def check_schema_set_up(conn: asyncpg.Connection, schema: str) -> None:
    """Raise `SchemaNotSetUp` unless this role can read and append to `schema`'s events: a
    service that leaves setup to the schema's owner fails at start, with the reason, rather
    than at its first append."""
    events = f"{check_schema_name(schema)}.events"
    try:
        problem = await conn.fetchval(
            "SELECT CASE WHEN to_regclass($1) IS NULL THEN 'it has no events table' "
            "WHEN to_regprocedure($2) IS NULL THEN 'it has no append_events function' "
            "WHEN NOT has_table_privilege($1, 'SELECT, INSERT') "
            "THEN 'this role may not read and insert events' END",
            events, f"{schema}.append_events(text, integer, uuid[], text[], smallint[], bytea[], "
            "bytea[], timestamptz[], text, bytea, text, text, interval)")
    except asyncpg.InsufficientPrivilegeError as exc:
        problem = str(exc)
    if problem is not None:
        user = await conn.fetchval("SELECT current_user")
        raise SchemaNotSetUp(
            f"event store schema {schema!r} is not set up for role {user!r}: {problem}. Its "
            "owner sets it up (as `sdv up` does before starting the services); or unset "
            "SDV_SCHEMA_SETUP to let this process set it up with its own rights")
