"""The package catalog read model, fed from `sdv.evt.package.>` by the shared projection
runner. It only matches events to the writes of its view (adapters/catalog_view.py), which owns
the `packages` table and every query of it."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from sdv_events.envelope import Envelope
from sdv_events.schemas.packages import PackagePromoted, PackagePublished, PackageYanked
from sdv_packager.adapters.catalog_view import CatalogView


class PackageCatalog:
    name = "package_catalog"
    filter_subjects: Sequence[str] = ("sdv.evt.package.>",)
    tables: Sequence[str] = CatalogView.tables

    def __init__(self, schema: str) -> None:
        self.view = CatalogView(schema)

    def at(self, schema: str) -> PackageCatalog:
        return PackageCatalog(schema)

    async def create(self, conn: asyncpg.Connection) -> None:
        await self.view.create(conn)

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        match event.data:
            case PackagePublished(package=info):
                await self.view.published(conn, info, event.occurred_at)
            case PackageYanked(name=name, version=version, reason=reason):
                await self.view.yanked(conn, name, version, reason)
            case PackagePromoted(name=name, version=version, to_channel=channel):
                await self.view.promoted(conn, name, version, channel)
            case _:
                pass
