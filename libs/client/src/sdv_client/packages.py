"""Typed SDK for the packager: upload an app directory, publish, yank, promote, get, list,
download.

An operator's credentials reach the suite's JetStream only under a prefix of their account's
(`js_prefix`, `sdv_events.auth.roles.JS_API_PREFIX`) and only for what they need: uploads to
`sdv_uploads`, and direct gets (no consumer) of artifacts and reported state."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import ObjectInfo
from nats.js.errors import NotFoundError, ObjectNotFoundError

from sdv_events.bus import CommandClient, Forbidden, Internal
from sdv_events.bus.denials import PublishDenied, denials_of
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
    def __init__(self, nc: NatsClient, *, actor: str = "sdk", js_prefix: str | None = None) -> None:
        self.nc = nc
        self.commands = CommandClient(nc, actor=actor, timeout=10.0)
        self.js = nc.jetstream(**({"prefix": js_prefix} if js_prefix else {}))
        self.js_api = js_prefix or "$JS.API"

    async def publish_dir(self, app_dir: Path, *, command_id: str | None = None,
                          version: str | None = None) -> PackageInfo:
        """With a `command_id`, a retry is the same request (the upload is named after it), so
        the packager answers with the first outcome instead of a conflict."""
        upload = f"uploads/{command_id or uuid7()}.tar.gz"
        await self._upload(upload, tar_app_dir(app_dir))
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

    async def _upload(self, name: str, data: bytes) -> None:
        async def put() -> None:
            bucket = await self.js.object_store(UPLOADS_BUCKET)  # devices cannot read it
            await bucket.put(name, data)

        denials = denials_of(self.nc)
        try:
            await (put() if denials is None else denials.guard(put()))
        except PublishDenied as denied:  # a viewer's credentials: uploads are not its role's
            raise Forbidden(f"{denied}: these credentials may not upload apps",
                            details={"subject": denied.subject, "reason": "permissions_violation"}
                            ) from None

    async def download(self, info: PackageInfo) -> bytes:
        """The artifact, read with direct gets (metadata by subject, then each chunk after the
        last one's sequence) and checked against the object's SHA-256."""
        stream = f"OBJ_{PACKAGES_BUCKET}"
        meta = f"$O.{PACKAGES_BUCKET}.M.{base64.urlsafe_b64encode(info.object_name.encode()).decode()}"
        try:
            raw = await self.js.get_last_msg(stream, meta, direct=True)
            obj = ObjectInfo.from_response(json.loads(raw.data or b""))
        except (NotFoundError, ObjectNotFoundError):
            raise Internal(f"{info.object_name}: not in {PACKAGES_BUCKET}") from None
        chunks, data, seq = f"$O.{PACKAGES_BUCKET}.C.{obj.nuid}", bytearray(), 0
        while len(data) < (obj.size or 0):
            try:
                msg = await self.nc.request(f"{self.js_api}.DIRECT.GET.{stream}",
                                            json.dumps({"seq": seq + 1, "next_by_subj": chunks}).encode(),
                                            timeout=10.0)
            except nats.errors.TimeoutError:
                raise Internal(f"{info.object_name}: no chunk after {len(data)} bytes") from None
            headers = msg.headers or {}
            if headers.get("Nats-Subject") != chunks or "Nats-Sequence" not in headers:
                raise Internal(f"{info.object_name}: chunks end at {len(data)} of {obj.size} bytes")
            data += msg.data
            seq = int(headers["Nats-Sequence"])
        digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        if obj.digest and obj.digest.rstrip("=") != digest.rstrip("="):
            raise Internal(f"{info.object_name}: the downloaded bytes do not match the object's digest")
        return bytes(data)
