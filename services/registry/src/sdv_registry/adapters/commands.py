"""`sdv.cmd.registry.*`: operator commands and queries — a few lines each."""

from __future__ import annotations

from faststream.nats import NatsRouter

from sdv_events.bus import RequestInfo, register_command
from sdv_events.schemas.devices import (
    AcceptDevice,
    CountDevices,
    DecommissionDevice,
    DeviceCounts,
    DeviceList,
    DeviceView,
    GetDevice,
    GetRegistryStats,
    ListDevices,
    PreauthorizeDevice,
    RegistryStats,
    RejectDevice,
    ResolvedDevices,
    ResolveSelector,
    SetLabels,
)
from sdv_registry.application import Registry
from sdv_registry.settings import SERVICE


def command_router(registry: Registry) -> NatsRouter:
    router = NatsRouter()

    async def preauthorize(req: PreauthorizeDevice, info: RequestInfo) -> DeviceView:
        return await registry.preauthorize(req.device_id, req.token, req.labels,
                                           info.metadata(), info.idempotency_key)

    async def accept(req: AcceptDevice, info: RequestInfo) -> DeviceView:
        return await registry.accept(req.device_id, req.reason, info.metadata(), info.idempotency_key,
                                     key_fingerprint=req.key_fingerprint)

    async def reject(req: RejectDevice, info: RequestInfo) -> DeviceView:
        return await registry.reject(req.device_id, req.reason, info.metadata(), info.idempotency_key)

    async def decommission(req: DecommissionDevice, info: RequestInfo) -> DeviceView:
        return await registry.decommission(req.device_id, req.reason, info.metadata(), info.idempotency_key)

    async def set_labels(req: SetLabels, info: RequestInfo) -> DeviceView:
        return await registry.set_labels(req.device_id, req.labels, req.remove, info.metadata(),
                                         info.idempotency_key)

    async def get(req: GetDevice, _: RequestInfo) -> DeviceView:
        return await registry.get(req.device_id)

    async def list_(req: ListDevices, _: RequestInfo) -> DeviceList:
        devices, total = await registry.page(req.selector, req.status, req.online, req.limit, req.offset)
        return DeviceList(devices, total)

    async def count(req: CountDevices, _: RequestInfo) -> DeviceCounts:
        return await registry.count(req.selector, req.status, req.online)

    async def resolve(req: ResolveSelector, _: RequestInfo) -> ResolvedDevices:
        return ResolvedDevices(req.selector, await registry.resolve(req.selector, req.online_only))

    async def stats(_: GetRegistryStats, __: RequestInfo) -> RegistryStats:
        return registry.stats()

    register_command(router, SERVICE, "preauthorize", PreauthorizeDevice, preauthorize)
    register_command(router, SERVICE, "accept", AcceptDevice, accept)
    register_command(router, SERVICE, "reject", RejectDevice, reject)
    register_command(router, SERVICE, "decommission", DecommissionDevice, decommission)
    register_command(router, SERVICE, "set_labels", SetLabels, set_labels)
    register_command(router, SERVICE, "get", GetDevice, get)
    register_command(router, SERVICE, "list", ListDevices, list_)
    register_command(router, SERVICE, "count", CountDevices, count)
    register_command(router, SERVICE, "resolve", ResolveSelector, resolve)
    register_command(router, SERVICE, "stats", GetRegistryStats, stats)
    return router
