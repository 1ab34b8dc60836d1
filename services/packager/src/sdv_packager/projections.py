"""The package catalog read model (`<schema>.packages`), fed from `sdv.evt.package.>`."""

from __future__ import annotations

import asyncpg
import msgspec

from sdv_events.envelope import Envelope
from sdv_events.schemas.packages import (
    PackageInfo,
    PackagePromoted,
    PackagePublished,
    PackageView,
    PackageYanked,
)

_encoder = msgspec.json.Encoder()


class PackageCatalog:
    name = "package_catalog"
    filter_subjects = ("sdv.evt.package.>",)
    tables = ("packages",)

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.packages"

    def at(self, schema: str) -> PackageCatalog:
        return PackageCatalog(schema)

    async def create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {self.table} (
                name text NOT NULL, version text NOT NULL, digest text NOT NULL,
                channel text NOT NULL, yanked boolean NOT NULL DEFAULT false, yank_reason text,
                info bytea NOT NULL, published_at timestamptz NOT NULL,
                PRIMARY KEY (name, version))""")

    async def reset(self, conn: asyncpg.Connection) -> None:
        await self.create(conn)
        await conn.execute(f"TRUNCATE {self.table}")

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        match event.data:
            case PackagePublished(package=info):
                await conn.execute(
                    f"INSERT INTO {self.table} (name, version, digest, channel, info, published_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING",
                    info.name, info.version, info.digest, info.channel, _encoder.encode(info),
                    event.occurred_at,
                )
            case PackageYanked(name=name, version=version, reason=reason):
                await conn.execute(
                    f"UPDATE {self.table} SET yanked = true, yank_reason = $3 "
                    "WHERE name = $1 AND version = $2", name, version, reason,
                )
            case PackagePromoted(name=name, version=version, to_channel=channel):
                await conn.execute(
                    f"UPDATE {self.table} SET channel = $3 WHERE name = $1 AND version = $2",
                    name, version, channel,
                )

    async def list(
        self, pool: asyncpg.Pool, name: str | None, channel: str | None, include_yanked: bool
    ) -> list[PackageView]:
        rows = await pool.fetch(
            f"SELECT info, channel, yanked, yank_reason FROM {self.table} "
            "WHERE ($1::text IS NULL OR name = $1) AND ($2::text IS NULL OR channel = $2) "
            "AND ($3 OR NOT yanked) ORDER BY name, published_at, version",
            name, channel, include_yanked,
        )
        return [
            PackageView(msgspec.json.decode(r["info"], type=PackageInfo), r["channel"], r["yanked"],
                        r["yank_reason"])
            for r in rows
        ]
