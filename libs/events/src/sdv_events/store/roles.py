"""One PostgreSQL login role per service, and an owner of the record that no service is.

A service's schema, its `events` table with the append-only triggers, and the rest of the event
store's own objects (001/002 `.sql`) belong to `sdv_store_owner`, a role nobody logs in as. The
service's role (`sdv_<service>`) may use its schema and create tables in it — its read models,
which it then owns — read and insert events, and change the store's bookkeeping tables. It may
not update, delete or truncate events, drop or disable their triggers, replace the functions, or
drop the table or the schema. (No service owns its schema: in PostgreSQL the owner of a schema
may drop everything in it, whoever owns that.) It has no rights on another service's schema, is
no superuser, and cannot create roles or databases.

It may create schemas (`CREATE` on the database, which also lets it install trusted
extensions): `sdv rebuild` builds a read model in a shadow schema of its own and swaps its
tables in (processing/rebuild.py). What it creates it owns; it reaches nothing of anyone else's
that way.

Provisioning runs as a superuser before the services start (`sdv up`) and sets the event store
up too (`ensure_schema`), which the services then only check (`SDV_SCHEMA_SETUP=0`). It takes
over a schema an earlier release made as the superuser: the store's objects go to the owner,
every other table of the schema — and leftover shadow schemas — to the service.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import asyncpg

from sdv_events.errors import SdvError
from sdv_events.processing.rebuild import shadow_schema
from sdv_events.store.credentials import (
    check_role_name,
    load_or_create_password,
    scram_verifier,
    url_with_passfile,
)
from sdv_events.store.schema import check_schema_name, ensure_schema

STORE_OWNER = "sdv_store_owner"
# The event store's tables and what a service may do to each (it owns none of them).
STORE_TABLE_GRANTS = {
    "events": "SELECT, INSERT",
    "event_hashes": "SELECT, INSERT",
    "chain_backfill": "SELECT",
    "commands": "SELECT, INSERT, UPDATE, DELETE",
    "checkpoints": "SELECT, INSERT, UPDATE, DELETE",
    "idempotency_keys": "SELECT, INSERT, UPDATE, DELETE",
}
_NOTHING_ELSE = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


class ProvisioningError(SdvError):
    """A service's role or schema could not be set up; the message says which and why."""


def service_role(service: str) -> str:
    return check_role_name(f"sdv_{service}")


async def provision_services(
    admin_url: str, schemas: Mapping[str, str], passwords_dir: Path
) -> dict[str, str]:
    """For each service → schema: its role, with a password made once into
    `passwords_dir/<service>.pgpass` (0600, in a 0700 folder), and its schema set up. Connects
    with `admin_url` (a superuser); returns each service's URL (its role, its password file)."""
    urls = {}
    service = ""
    try:
        passwords = await asyncio.to_thread(_passwords, passwords_dir, list(schemas))
        conn = await asyncpg.connect(admin_url)
        try:
            for service, schema in schemas.items():
                password, passfile = passwords[service]
                role = service_role(service)
                await provision_service(conn, role=role, password=password, schema=schema)
                urls[service] = url_with_passfile(admin_url, role, passfile)
        finally:
            await conn.close()
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        what = f"the {service} service's" if service else "the services'"
        raise ProvisioningError(f"cannot set up {what} PostgreSQL role and schema: {exc!r}") from exc
    return urls


def _passwords(passwords_dir: Path, services: list[str]) -> dict[str, tuple[str, Path]]:
    passwords_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(passwords_dir, 0o700)
    found = {}
    for service in services:
        passfile = passwords_dir / f"{service}.pgpass"
        found[service] = (load_or_create_password(passfile, service_role(service))[0], passfile)
    return found


async def provision_service(
    conn: asyncpg.Connection, *, role: str, password: str, schema: str
) -> None:
    """As a superuser, in one transaction: `role` logs in with `password` and may do nothing
    but what the module docstring says, in `schema` only; `schema` is set up and owned by
    `STORE_OWNER`. Idempotent."""
    check_role_name(role)
    check_schema_name(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sdv_schema_setup'))")
        await _ensure_role(conn, STORE_OWNER, f"NOLOGIN {_NOTHING_ELSE}")
        await _ensure_role(conn, role, f"LOGIN {_NOTHING_ELSE} PASSWORD '{scram_verifier(password)}'")
        database = await conn.fetchval("SELECT quote_ident(current_database())")
        await conn.execute(f"GRANT CONNECT, CREATE ON DATABASE {database} TO {role}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {STORE_OWNER}")
        await ensure_schema(conn, schema)
        await _hand_over(conn, schema, role)
        await conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
        await conn.execute(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}")
        for table, privileges in STORE_TABLE_GRANTS.items():
            await conn.execute(f"REVOKE ALL ON {schema}.{table} FROM PUBLIC, {role}")
            await conn.execute(f"GRANT {privileges} ON {schema}.{table} TO {role}")
        # nextval only (an INSERT's default position); setval would need UPDATE.
        await conn.execute(f"GRANT USAGE ON SEQUENCE {schema}.events_global_position_seq TO {role}")


async def _ensure_role(conn: asyncpg.Connection, role: str, attributes: str) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    await conn.execute(f"{'ALTER' if exists else 'CREATE'} ROLE {role} WITH {attributes}")
    # Member of nothing: no other role's rights reach it (the owner's least of all).
    for granted in await conn.fetch(
        "SELECT roleid::regrole::text AS name FROM pg_auth_members WHERE member = $1::regrole",
        role):
        await conn.execute(f"REVOKE {granted['name']} FROM {role}")


async def _hand_over(conn: asyncpg.Connection, schema: str, role: str) -> None:
    """Owners as the module docstring says, changed only where they differ (an ALTER … OWNER
    locks the table even when it changes nothing)."""
    if await conn.fetchval("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1",
                           schema) != STORE_OWNER:
        await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {STORE_OWNER}")
    # Tables only: their indexes and the sequences they own follow them.
    tables = await conn.fetch(
        "SELECT c.relname, c.relowner::regrole::text AS owner FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')", schema)
    for table in tables:
        owner = STORE_OWNER if table["relname"] in STORE_TABLE_GRANTS else role
        if table["owner"] != owner:
            await conn.execute(f'ALTER TABLE {schema}."{table["relname"]}" OWNER TO {owner}')
    for function in await conn.fetch(
        "SELECT p.oid::regprocedure::text AS signature FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = $1 AND p.proowner::regrole::text <> $2", schema, STORE_OWNER):
        await conn.execute(f"ALTER FUNCTION {function['signature']} OWNER TO {STORE_OWNER}")
    for shadow in await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) "
        "AND nspowner::regrole::text <> $2", shadow_schema(schema, ""), role):
        await conn.execute(f'ALTER SCHEMA "{shadow["nspname"]}" OWNER TO {role}')
