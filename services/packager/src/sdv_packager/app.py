"""Composition root of the packager: settings → store, object store, signer, catalog →
command router and the package catalog projection, on the shared service runtime."""

from __future__ import annotations

import asyncio
from importlib import resources

from sdv_events.processing import ConsumerRunner, HistorySource, OwnThenHistory, StoreSource
from sdv_events.service import ServiceRuntime, run_service
from sdv_events.settings import settings_or_exit
from sdv_packager.adapters.artifacts import ArtifactStore
from sdv_packager.adapters.commands import command_router
from sdv_packager.application import Packager
from sdv_packager.domain.vss import VssCatalog
from sdv_packager.projections import PackageCatalog
from sdv_packager.settings import SERVICE, PackagerSettings, load_settings
from sdv_packager.signing import Signer


def load_catalog(settings: PackagerSettings) -> VssCatalog:
    if settings.vss_catalog_path is not None:
        return VssCatalog.from_json(settings.vss_catalog_path.read_bytes())
    return VssCatalog.from_json((resources.files("sdv_packager") / "data" / "vss_catalog.json").read_bytes())


async def serve(settings: PackagerSettings, stop: asyncio.Event | None = None) -> None:
    async def on_start(runtime: ServiceRuntime) -> None:
        read_model = PackageCatalog(settings.schema_name)
        async with runtime.store.pool.acquire() as conn:
            await read_model.create(conn)
        packager = Packager(
            store=runtime.store, artifacts=await ArtifactStore.open(runtime.js),
            catalog=load_catalog(settings), signer=Signer.load_or_create(settings.signing_key_path),
            wheels=settings.wheel_source(), packages=read_model.view,
        )
        runtime.broker.include_router(command_router(packager))
        nc = runtime.broker.config.connection_state.connection
        runner = ConsumerRunner(runtime.store.pool, settings.schema_name, runtime.js, read_model,
                                source=OwnThenHistory(StoreSource(runtime.store), HistorySource(nc)),
                                build_from=runtime.store, service=SERVICE, nc=nc)
        runtime.run_consumer(runner)

    await run_service(SERVICE, settings, on_start=on_start, stop=stop)


def main() -> None:
    asyncio.run(serve(settings_or_exit(f"python -m sdv_{SERVICE}", load_settings)))
