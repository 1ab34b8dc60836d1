"""Packager use cases: publish an app directory, yank, promote, get, find.

Publishing = validate + build (in a worker thread: it is CPU and pip work) → sign the manifest
digest → store the artifact by digest → `PublishPackage` through the shared command runner.
`get` folds the package's stream (read-your-writes); `find` reads the catalog read model.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from sdv_events.bus import Conflict, InvalidRequest, NotFound
from sdv_events.commands import handle_command, load, raise_if_refused
from sdv_events.envelope import Metadata
from sdv_events.idempotency import IdempotencyKey
from sdv_events.ids import stream_id
from sdv_events.package_format import platform_key
from sdv_events.schemas.packages import (
    Channel,
    HealthCheck,
    PackageInfo,
    PackageView,
    Resources,
    Security,
)
from sdv_events.store import EventStore
from sdv_packager.adapters.artifacts import UPLOAD_PREFIX, ArtifactStore, is_upload
from sdv_packager.adapters.catalog_view import CatalogView
from sdv_packager.build.app_source import load_app
from sdv_packager.build.errors import AppInvalid
from sdv_packager.build.pipeline import BuiltPackage, build_package
from sdv_packager.build.upload import unpack_upload
from sdv_packager.build.wheels import WheelSource
from sdv_packager.domain.package import (
    PackageCommand,
    PromotePackage,
    PublishPackage,
    YankPackage,
    package_decider,
)
from sdv_packager.domain.vss import VssCatalog
from sdv_packager.signing import Signer

log = structlog.get_logger("sdv.packager")


def package_info(built: BuiltPackage, signer: Signer) -> PackageInfo:
    m, app = built.manifest, built.app
    return PackageInfo(
        name=m.name, version=m.version, digest=built.digest, size=len(built.artifact),
        object_name=built.digest, manifest_digest=built.manifest_digest,
        signature=signer.sign(built.manifest_digest), key_id=signer.key_id,
        channel=app.app.channel, runtime=app.app.runtime, entry_point=m.entry_point,
        python_version=m.python_version, description=m.description, vss_reads=m.vss_reads,
        vss_writes=m.vss_writes, resources=Resources(app.resources.memory, app.resources.cpu),
        hot_swap=m.hot_swap,
        health=HealthCheck(app.health.alive_for_s, app.health.command, app.health.timeout_s),
        security=Security(app.security.sandbox, app.security.network),
        dependencies=m.dependencies, bundled_wheels=m.wheels,
        platforms=sorted({platform_key(t.python, t.arch) for t in m.targets}),
        resolved=m.resolved, vss_version=m.vss_version, mqtt=m.mqtt,
    )


@dataclass
class Packager:
    store: EventStore
    artifacts: ArtifactStore
    catalog: VssCatalog
    signer: Signer
    wheels: WheelSource
    packages: CatalogView

    async def _run(self, name: str, command: PackageCommand, metadata: Metadata,
                   key: IdempotencyKey | None) -> None:
        raise_if_refused(await handle_command(
            self.store, package_decider, stream_id("package", name), command,
            key=key, metadata=metadata,
        ))

    async def publish_dir(
        self, app_dir: Path, *, metadata: Metadata = Metadata(), key: IdempotencyKey | None = None,
        version: str | None = None,
    ) -> PackageInfo:
        try:
            source = await asyncio.to_thread(load_app, app_dir, version)
            # A rebuild of a published version resolves to the versions it bundled then, so an
            # unpinned app rebuilt later is the same artifact (an idempotent publish), not a
            # conflict because an index moved on.
            pins = (await self._resolved_before(source.manifest.app.name, source.manifest.app.version)
                    if source.dependencies else [])
            built = await asyncio.to_thread(build_package, app_dir, self.catalog, self.wheels,
                                            version=version, constraints=pins)
        except AppInvalid as exc:
            raise InvalidRequest(str(exc), details={
                p.where: p.message for p in exc.problems
            }) from None
        info = package_info(built, self.signer)
        log.info("package_built", app=info.name, version=info.version, digest=info.digest,
                 size=info.size)
        await self.artifacts.put(info.object_name, built.artifact)
        try:
            await self._run(info.name, PublishPackage(info), metadata, key)
        except Conflict:
            if not await self._referenced(info.name, info.digest):
                await self.artifacts.delete(info.object_name)
            raise
        return info

    async def publish_upload(self, upload: str, *, metadata: Metadata = Metadata(),
                             key: IdempotencyKey | None = None, version: str | None = None) -> PackageInfo:
        if not is_upload(upload):
            # Releases live under their digest: publish consumes (deletes) only raw uploads.
            raise InvalidRequest(f"{upload!r} is not an upload (names start with {UPLOAD_PREFIX!r})")
        data = await self.artifacts.get(upload)
        if data is None:
            raise NotFound(f"no upload {upload!r} in the object store")
        try:
            with tempfile.TemporaryDirectory(prefix="sdv-upload-") as tmp:
                app_dir = await asyncio.to_thread(unpack_upload, data, Path(tmp))
                return await self.publish_dir(app_dir, metadata=metadata, key=key, version=version)
        finally:
            await self.artifacts.delete(upload)

    async def _resolved_before(self, name: str, version: str) -> list[str]:
        state, _ = await load(self.store, package_decider, stream_id("package", name))
        published = state.versions.get(version)
        return list(published.info.resolved) if published is not None else []

    async def _referenced(self, name: str, digest: str) -> bool:
        state, _ = await load(self.store, package_decider, stream_id("package", name))
        return any(v.digest == digest for v in state.versions.values())

    async def yank(self, name: str, version: str, reason: str, *, metadata: Metadata = Metadata(),
                   key: IdempotencyKey | None = None) -> PackageView:
        await self._run(name, YankPackage(name, version, reason), metadata, key)
        return await self.get(name, version)

    async def promote(self, name: str, version: str, channel: Channel, *,
                      metadata: Metadata = Metadata(), key: IdempotencyKey | None = None) -> PackageView:
        await self._run(name, PromotePackage(name, version, channel), metadata, key)
        return await self.get(name, version)

    async def get(self, name: str, version: str) -> PackageView:
        """Folded from the event stream, so a reply right after publish already sees it."""
        state, _ = await load(self.store, package_decider, stream_id("package", name))
        found = state.versions.get(version)
        if found is None:
            raise NotFound(f"{name} {version} is not published")
        return PackageView(found.info, found.channel, found.yanked, found.yank_reason)

    async def find(self, name: str | None, channel: str | None, include_yanked: bool) -> list[PackageView]:
        return await self.packages.find(self.store.pool, name, channel, include_yanked)
