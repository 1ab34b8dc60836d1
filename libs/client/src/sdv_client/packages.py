"""Typed SDK for the packager: upload an app directory, publish, yank, promote, get, list."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from nats.aio.client import Client as NatsClient

from sdv_events.bus import CommandClient
from sdv_events.ids import uuid7
from sdv_events.provisioning import PACKAGES_BUCKET, UPLOADS_BUCKET
from sdv_events.schemas.packages import (
    Channel,
    GetPackage,
    GetSigningKey,
    ListPackages,
    PackageInfo,
    PackageList,
    PackageView,
    PromoteRequest,
    PublishRequest,
    SigningKey,
    YankRequest,
)

SERVICE = "packager"
PUBLISH_TIMEOUT_S = 300.0  # resolving and downloading dependency wheels can take a while

_SKIP = {"__pycache__", ".git", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def tar_app_dir(app_dir: Path) -> bytes:
    """The app directory as a tar.gz for upload (the packager builds the reproducible one)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path in sorted(app_dir.rglob("*")):
            rel = path.relative_to(app_dir)
            if any(part in _SKIP for part in rel.parts) or path.is_symlink() or not path.is_file():
                continue
            tar.add(path, arcname=rel.as_posix(), recursive=False)
    return out.getvalue()


class PackagerClient:
    def __init__(self, nc: NatsClient, *, actor: str = "sdk") -> None:
        self.nc = nc
        self.commands = CommandClient(nc, actor=actor, timeout=10.0)

    async def publish_dir(self, app_dir: Path, *, command_id: str | None = None,
                          version: str | None = None) -> PackageInfo:
        """With a `command_id`, a retry is the same request (the upload is named after it), so
        the packager answers with the first outcome instead of a conflict."""
        bucket = await self.nc.jetstream().object_store(UPLOADS_BUCKET)  # devices cannot read it
        upload = f"uploads/{command_id or uuid7()}.tar.gz"
        await bucket.put(upload, tar_app_dir(app_dir))
        return await self.commands.call(SERVICE, "publish", PublishRequest(upload, version), PackageInfo,
                                        timeout=PUBLISH_TIMEOUT_S, command_id=command_id)

    async def yank(self, name: str, version: str, reason: str) -> PackageView:
        return await self.commands.call(SERVICE, "yank", YankRequest(name, version, reason), PackageView)

    async def promote(self, name: str, version: str, channel: Channel) -> PackageView:
        return await self.commands.call(SERVICE, "promote", PromoteRequest(name, version, channel),
                                        PackageView)

    async def get(self, name: str, version: str) -> PackageView:
        return await self.commands.call(SERVICE, "get", GetPackage(name, version), PackageView)

    async def list(self, name: str | None = None, channel: Channel | None = None,
                   include_yanked: bool = True) -> list[PackageView]:
        reply = await self.commands.call(SERVICE, "list", ListPackages(name, channel, include_yanked),
                                         PackageList)
        return reply.packages

    async def signing_key(self) -> SigningKey:
        return await self.commands.call(SERVICE, "signing_key", GetSigningKey(), SigningKey)

    async def download(self, info: PackageInfo) -> bytes:
        bucket = await self.nc.jetstream().object_store(PACKAGES_BUCKET)
        return (await bucket.get(info.object_name)).data or b""
