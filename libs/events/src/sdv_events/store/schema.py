"""Idempotent schema setup: numbered `.sql` files applied under an advisory lock."""

from __future__ import annotations

import re
from importlib import resources

import asyncpg

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_RE.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r}: lowercase letters, digits and '_' only")
    return schema


def schema_sql(schema: str) -> list[str]:
    check_schema_name(schema)
    folder = resources.files("sdv_events.store") / "sql"
    scripts = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [p.read_text().replace("{schema}", schema) for p in scripts]


async def ensure_schema(conn: asyncpg.Connection, schema: str) -> None:
    """Create or update a service's event-store schema; concurrent callers serialize."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sdv_schema_setup'))")
        for sql in schema_sql(schema):
            await conn.execute(sql)
