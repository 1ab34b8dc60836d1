"""The device inventory read model (`<schema>.devices`), fed from `sdv.evt.device.>` by the
shared projection runner (rows and checkpoint in one transaction). `list`, `count` and
`resolve` read it; label selectors become SQL over the `labels` jsonb column."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from sdv_events.enrolment import key_fingerprint
from sdv_events.envelope import Envelope
from sdv_events.schemas.devices import (
    Capabilities,
    DeviceAccepted,
    DeviceAnnounced,
    DeviceCameOnline,
    DeviceCapabilitiesUpdated,
    DeviceCounts,
    DeviceDecommissioned,
    DeviceLabelsChanged,
    DevicePreauthorized,
    DeviceRejected,
    DeviceView,
    DeviceWentOffline,
)
from sdv_registry.selector_sql import Filters, where_clause

_encode = msgspec.json.Encoder().encode
_capabilities = msgspec.json.Decoder(Capabilities)
_COLUMNS = ("device_id, status, public_key, capabilities, labels, online, last_seen_at, admitted_by, "
            "created_at, updated_at, version")


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


class DeviceInventory:
    name = "device_inventory"
    filter_subjects = ("sdv.evt.device.>",)
    tables = ("devices",)

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.devices"

    def at(self, schema: str) -> DeviceInventory:
        return DeviceInventory(schema)

    async def create(self, conn: asyncpg.Connection) -> None:
        index = self.table.replace(".", "_")
        await conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {self.table} (
                device_id text PRIMARY KEY, status text NOT NULL, public_key text,
                capabilities bytea, labels jsonb NOT NULL DEFAULT '{{}}',
                online boolean NOT NULL DEFAULT false, last_seen_at timestamptz,
                admitted_by text, created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL, version integer NOT NULL);
            CREATE INDEX IF NOT EXISTS {index}_labels ON {self.table} USING gin (labels);
            CREATE INDEX IF NOT EXISTS {index}_status ON {self.table} (status, online)""")

    async def reset(self, conn: asyncpg.Connection) -> None:
        await self.create(conn)
        await conn.execute(f"TRUNCATE {self.table}")

    async def _upsert(self, conn: asyncpg.Connection, event: Envelope, **values: Any) -> None:
        columns = ["device_id", "created_at", "updated_at", "version", *values]
        params = [event.data.device_id, event.occurred_at, event.occurred_at, event.version,
                  *values.values()]
        updates = ", ".join(f"{c} = excluded.{c}" for c in ["updated_at", "version", *values])
        marks = ", ".join(f"${i}" for i in range(1, len(params) + 1))
        await conn.execute(
            f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT (device_id) DO UPDATE SET {updates}", *params)

    async def _update(self, conn: asyncpg.Connection, event: Envelope, **values: Any) -> None:
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(values, start=4))
        await conn.execute(
            f"UPDATE {self.table} SET updated_at = $2, version = $3, {sets} WHERE device_id = $1",
            event.data.device_id, event.occurred_at, event.version, *values.values())

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        match event.data:
            case DevicePreauthorized(labels=labels):
                await self._upsert(conn, event, status="preauthorized", labels=_encode(labels).decode())
            case DeviceAnnounced(public_key=key, capabilities=caps):
                await self._upsert(conn, event, status="pending", public_key=key,
                                   capabilities=_encode(caps))
            case DeviceAccepted(admitted_by=by):
                await self._update(conn, event, status="accepted", admitted_by=by)
            case DeviceRejected():
                await self._update(conn, event, status="rejected", admitted_by=None)
            case DeviceDecommissioned():
                await self._update(conn, event, status="decommissioned", admitted_by=None)
            case DeviceCapabilitiesUpdated(capabilities=caps):
                await self._update(conn, event, capabilities=_encode(caps))
            case DeviceLabelsChanged(labels=labels):
                await self._update(conn, event, labels=_encode(labels).decode())
            case DeviceCameOnline(seen_at=seen_at):
                await self._update(conn, event, online=True, last_seen_at=seen_at)
            case DeviceWentOffline(last_seen_at=last_seen):
                await self._update(conn, event, online=False, last_seen_at=last_seen)

    # --- queries -----------------------------------------------------------------------------

    async def list(self, pool: asyncpg.Pool, filters: Filters, *, limit: int, offset: int
                   ) -> tuple[list[DeviceView], int]:
        where, params = where_clause(filters)
        rows = await pool.fetch(
            f"SELECT {_COLUMNS}, count(*) OVER () AS total FROM {self.table} WHERE {where} "
            f"ORDER BY device_id LIMIT ${len(params) + 1} OFFSET ${len(params) + 2}",
            *params, limit, offset)
        total = rows[0]["total"] if rows else await pool.fetchval(
            f"SELECT count(*) FROM {self.table} WHERE {where}", *params)
        return [view_of(r) for r in rows], int(total)

    async def count(self, pool: asyncpg.Pool, filters: Filters) -> DeviceCounts:
        where, params = where_clause(filters)
        rows = await pool.fetch(
            f"SELECT status, count(*) AS n, count(*) FILTER (WHERE online) AS up "
            f"FROM {self.table} WHERE {where} GROUP BY status", *params)
        return DeviceCounts(total=sum(r["n"] for r in rows), online=sum(r["up"] for r in rows),
                            by_status={r["status"]: r["n"] for r in rows})

    async def resolve(self, pool: asyncpg.Pool, filters: Filters) -> list[str]:
        where, params = where_clause(filters)
        rows = await pool.fetch(
            f"SELECT device_id FROM {self.table} WHERE {where} ORDER BY device_id", *params)
        return [r["device_id"] for r in rows]
