"""The package catalog's table (`<schema>.packages`, declared in sql/001_packages.sql): every
write the projection makes and every query of it, in one place. Writes take the runner's
connection (rows and checkpoint commit together); queries take the pool."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from sdv_events.schemas.packages import PackageInfo, PackageView
from sdv_events.store.schema import ensure_read_models

_encoder = msgspec.json.Encoder()
_info = msgspec.json.Decoder(PackageInfo)


class CatalogView:
    tables = ("packages",)

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = f"{schema}.packages"

    async def create(self, conn: asyncpg.Connection) -> None:
        await ensure_read_models(conn, "sdv_packager", self.schema)

    # --- writes (the projection's) -------------------------------------------------------------

    async def published(self, conn: asyncpg.Connection, info: PackageInfo, at: datetime) -> None:
        await conn.execute(
            f"INSERT INTO {self.table} (name, version, digest, channel, info, published_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING",
            info.name, info.version, info.digest, info.channel, _encoder.encode(info), at,
        )

    async def yanked(self, conn: asyncpg.Connection, name: str, version: str, reason: str) -> None:
        await conn.execute(
            f"UPDATE {self.table} SET yanked = true, yank_reason = $3 WHERE name = $1 AND version = $2",
            name, version, reason,
        )

    async def promoted(self, conn: asyncpg.Connection, name: str, version: str, channel: str) -> None:
        await conn.execute(
            f"UPDATE {self.table} SET channel = $3 WHERE name = $1 AND version = $2",
            name, version, channel,
        )

    # --- queries -------------------------------------------------------------------------------

    async def find(self, db: asyncpg.Connection | asyncpg.Pool, name: str | None, channel: str | None,
                   include_yanked: bool) -> list[PackageView]:
        """Versions of `name` (any without), on `channel` (any without), oldest first per name."""
        rows = await db.fetch(
            f"SELECT info, channel, yanked, yank_reason FROM {self.table} "
            "WHERE ($1::text IS NULL OR name = $1) AND ($2::text IS NULL OR channel = $2) "
            "AND ($3 OR NOT yanked) ORDER BY name, published_at, version",
            name, channel, include_yanked,
        )
        return [PackageView(_info.decode(r["info"]), r["channel"], r["yanked"], r["yank_reason"])
                for r in rows]
