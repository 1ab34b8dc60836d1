"""`sdv.cmd.packager.*`: publish, yank, promote, get, list, signing_key — a few lines each."""

from __future__ import annotations

from faststream.nats import NatsRouter

from sdv_events.bus import RequestInfo, register_command
from sdv_events.schemas.packages import (
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
from sdv_packager.application import Packager
from sdv_packager.settings import SERVICE


def command_router(packager: Packager) -> NatsRouter:
    router = NatsRouter()

    async def publish(req: PublishRequest, info: RequestInfo) -> PackageInfo:
        return await packager.publish_upload(req.upload, metadata=info.metadata(),
                                             key=info.idempotency_key, version=req.version)

    async def yank(req: YankRequest, info: RequestInfo) -> PackageView:
        return await packager.yank(req.name, req.version, req.reason, metadata=info.metadata(),
                                   key=info.idempotency_key)

    async def promote(req: PromoteRequest, info: RequestInfo) -> PackageView:
        return await packager.promote(req.name, req.version, req.channel, metadata=info.metadata(),
                                      key=info.idempotency_key)

    async def get(req: GetPackage, _: RequestInfo) -> PackageView:
        return await packager.get(req.name, req.version)

    async def list_(req: ListPackages, _: RequestInfo) -> PackageList:
        return PackageList(await packager.find(req.name, req.channel, req.include_yanked))

    async def signing_key(_: GetSigningKey, __: RequestInfo) -> SigningKey:
        return SigningKey(packager.signer.key_id, packager.signer.public_key_b64)

    register_command(router, SERVICE, "publish", PublishRequest, publish)
    register_command(router, SERVICE, "yank", YankRequest, yank)
    register_command(router, SERVICE, "promote", PromoteRequest, promote)
    register_command(router, SERVICE, "get", GetPackage, get)
    register_command(router, SERVICE, "list", ListPackages, list_)
    register_command(router, SERVICE, "signing_key", GetSigningKey, signing_key)
    return router
