"""The device inventory's table (`<schema>.devices`, declared in sql/001_devices.sql): every
write the projection makes and every query of it, in one place. Writes take the runner's
connection (rows and checkpoint commit together); queries take the pool."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from sdv_events.enrolment import key_fingerprint
from sdv_events.schemas.devices import Capabilities, DeviceCounts, DeviceStatus, DeviceView
from sdv_events.store.schema import ensure_read_models
from sdv_registry.selector_sql import Filters, where_clause

_encode = msgspec.json.Encoder().encode
_capabilities = msgspec.json.Decoder(Capabilities)
_COLUMNS = ("device_id, status, public_key, capabilities, labels, online, last_seen_at, admitted_by, "
            "created_at, updated_at, version")
Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


class Stamp(msgspec.Struct, frozen=True):
    """The row an event changes, when it happened and the stream version it brings the row to."""

    device_id: str
    at: datetime
    version: int


def view_of(row: asyncpg.Record) -> DeviceView:
    caps = row["capabilities"]
    return DeviceView(
        device_id=row["device_id"], status=row["status"], public_key=row["public_key"],
        key_fingerprint=key_fingerprint(row["public_key"]) if row["public_key"] else None,
        capabilities=_capabilities.decode(caps) if caps is not None else None,
        labels=msgspec.json.decode(row["labels"]), online=row["online"],
        last_seen_at=row["last_seen_at"], admitted_by=row["admitted_by"],
        created_at=row["created_at"], updated_at=row["updated_at"], version=row["version"],
    )


class InventoryView:
    tables = ("devices",)

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = f"{schema}.devices"

    async def create(self, conn: asyncpg.Connection) -> None:
        await ensure_read_models(conn, "sdv_registry", self.schema)

    # --- writes (the projection's) -------------------------------------------------------------

    async def preauthorized(self, conn: asyncpg.Connection, row: Stamp, labels: dict[str, str]) -> None:
        await self._upsert(conn, row, status="preauthorized", labels=_encode(labels).decode())

    async def announced(self, conn: asyncpg.Connection, row: Stamp, public_key: str,
                        capabilities: Capabilities) -> None:
        await self._upsert(conn, row, status="pending", public_key=public_key,
                           capabilities=_encode(capabilities))

    async def status_changed(self, conn: asyncpg.Connection, row: Stamp, status: DeviceStatus,
                       admitted_by: str | None) -> None:
        await self._update(conn, row, status=status, admitted_by=admitted_by)

    async def capabilities_changed(self, conn: asyncpg.Connection, row: Stamp,
                                   capabilities: Capabilities) -> None:
        await self._update(conn, row, capabilities=_encode(capabilities))

    async def labels_changed(self, conn: asyncpg.Connection, row: Stamp, labels: dict[str, str]) -> None:
        await self._update(conn, row, labels=_encode(labels).decode())

    async def presence(self, conn: asyncpg.Connection, row: Stamp, online: bool,
                       last_seen_at: datetime | None) -> None:
        await self._update(conn, row, online=online, last_seen_at=last_seen_at)

    async def _upsert(self, conn: asyncpg.Connection, row: Stamp, **values: Any) -> None:
        columns = ["device_id", "created_at", "updated_at", "version", *values]
        params = [row.device_id, row.at, row.at, row.version, *values.values()]
        updates = ", ".join(f"{c} = excluded.{c}" for c in ["updated_at", "version", *values])
        marks = ", ".join(f"${i}" for i in range(1, len(params) + 1))
        await conn.execute(
            f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT (device_id) DO UPDATE SET {updates}", *params)

    async def _update(self, conn: asyncpg.Connection, row: Stamp, **values: Any) -> None:
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(values, start=4))
        await conn.execute(
            f"UPDATE {self.table} SET updated_at = $2, version = $3, {sets} WHERE device_id = $1",
            row.device_id, row.at, row.version, *values.values())

    # --- queries -------------------------------------------------------------------------------

    async def page(self, db: Db, filters: Filters, *, limit: int, offset: int
                   ) -> tuple[list[DeviceView], int]:
        """The devices `filters` match, ordered by id, `limit` from `offset`; and how many match."""
        where, params = where_clause(filters)
        rows = await db.fetch(
            f"SELECT {_COLUMNS}, count(*) OVER () AS total FROM {self.table} WHERE {where} "
            f"ORDER BY device_id LIMIT ${len(params) + 1} OFFSET ${len(params) + 2}",
            *params, limit, offset)
        total = rows[0]["total"] if rows else await db.fetchval(
            f"SELECT count(*) FROM {self.table} WHERE {where}", *params)
        return [view_of(r) for r in rows], int(total)

    async def count(self, db: Db, filters: Filters) -> DeviceCounts:
        where, params = where_clause(filters)
        rows = await db.fetch(
            f"SELECT status, count(*) AS n, count(*) FILTER (WHERE online) AS up "
            f"FROM {self.table} WHERE {where} GROUP BY status", *params)
        return DeviceCounts(total=sum(r["n"] for r in rows), online=sum(r["up"] for r in rows),
                            by_status={r["status"]: r["n"] for r in rows})

    async def resolve(self, db: Db, filters: Filters) -> list[str]:
        where, params = where_clause(filters)
        rows = await db.fetch(
            f"SELECT device_id FROM {self.table} WHERE {where} ORDER BY device_id", *params)
        return [r["device_id"] for r in rows]
