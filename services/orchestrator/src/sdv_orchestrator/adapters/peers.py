"""The orchestrator's view of its peers, through the bus only: packages from the packager,
devices from the registry."""

from __future__ import annotations

import asyncio

from sdv_events.bus import CommandClient, NotFound
from sdv_events.schemas.devices import DeviceList, DeviceView, GetDevice, ListDevices
from sdv_events.schemas.packages import GetPackage, PackageView
from sdv_events.schemas.rollouts import Target
from sdv_orchestrator.adapters.signal_catalogs import SignalCatalogs
from sdv_orchestrator.domain.planning import DeviceFacts

# A DeviceView is ~0.5 KB: 10,000 per page made the reply larger than NATS's 1 MB max payload.
PAGE = 1_000


def facts_of(view: DeviceView) -> DeviceFacts:
    caps = view.capabilities
    if caps is None:
        return DeviceFacts(view.device_id, runtimes=(), status=view.status, online=view.online,
                           labels=view.labels)
    return DeviceFacts(
        view.device_id, arch=caps.arch, runtimes=tuple(caps.runtimes),
        python_version=caps.python_version, kuksa=caps.kuksa.present, status=view.status,
        mqtt=caps.mqtt.present, catalog_digest=caps.kuksa.catalog,
        online=view.online, labels=view.labels,
    )


class Peers:
    def __init__(self, commands: CommandClient, catalogs: SignalCatalogs | None = None) -> None:
        self.commands = commands
        self.catalogs = catalogs

    async def package(self, name: str, version: str) -> PackageView:
        return await self.commands.call("packager", "get", GetPackage(name, version), PackageView)

    async def devices(self, target: Target, *,
                      signals: bool = False) -> tuple[list[DeviceFacts], dict[str, str]]:
        """Facts of the targeted devices (with `signals`, the signal catalogues their
        databrokers serve), and ids that the registry does not know."""
        found, unknown = await self._devices(target)
        if signals and self.catalogs is not None:
            found = await self.catalogs.resolve(found)
        return found, unknown

    async def _devices(self, target: Target) -> tuple[list[DeviceFacts], dict[str, str]]:
        if target.selector:
            found: list[DeviceFacts] = []
            offset = 0
            while True:
                page = await self.commands.call(
                    "registry", "list",
                    ListDevices(selector=target.selector, limit=PAGE, offset=offset),
                    DeviceList, timeout=30.0,
                )
                found += [facts_of(v) for v in page.devices]
                offset += len(page.devices)
                if not page.devices or offset >= page.total:
                    return found, {}
        unknown: dict[str, str] = {}

        async def one(device_id: str) -> DeviceFacts | None:
            try:
                return facts_of(await self.commands.call("registry", "get", GetDevice(device_id),
                                                         DeviceView))
            except NotFound:
                unknown[device_id] = "unknown device"
                return None

        views = await asyncio.gather(*(one(d) for d in dict.fromkeys(target.device_ids or [])))
        return [v for v in views if v is not None], unknown
