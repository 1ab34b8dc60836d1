"""The device inventory read model, fed from `sdv.evt.device.>` by the shared projection runner
(rows and checkpoint in one transaction). It only matches events to the writes of its view
(adapters/inventory_view.py), which owns the `devices` table and every query of it."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from sdv_events.envelope import Envelope
from sdv_events.schemas.devices import (
    DeviceAccepted,
    DeviceAnnounced,
    DeviceCameOnline,
    DeviceCapabilitiesUpdated,
    DeviceDecommissioned,
    DeviceLabelsChanged,
    DevicePreauthorized,
    DeviceRejected,
    DeviceWentOffline,
)
from sdv_registry.adapters.inventory_view import InventoryView, Stamp


class DeviceInventory:
    name = "device_inventory"
    filter_subjects: Sequence[str] = ("sdv.evt.device.>",)
    tables: Sequence[str] = InventoryView.tables

    def __init__(self, schema: str) -> None:
        self.view = InventoryView(schema)

    def at(self, schema: str) -> DeviceInventory:
        return DeviceInventory(schema)

    async def create(self, conn: asyncpg.Connection) -> None:
        await self.view.create(conn)

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        view = self.view
        match event.data:
            case DevicePreauthorized(device_id=did, labels=labels):
                await view.preauthorized(conn, _stamp(did, event), labels)
            case DeviceAnnounced(device_id=did, public_key=key, capabilities=caps):
                await view.announced(conn, _stamp(did, event), key, caps)
            case DeviceAccepted(device_id=did, admitted_by=by):
                await view.status_changed(conn, _stamp(did, event), "accepted", by)
            case DeviceRejected(device_id=did):
                await view.status_changed(conn, _stamp(did, event), "rejected", None)
            case DeviceDecommissioned(device_id=did):
                await view.status_changed(conn, _stamp(did, event), "decommissioned", None)
            case DeviceCapabilitiesUpdated(device_id=did, capabilities=caps):
                await view.capabilities_changed(conn, _stamp(did, event), caps)
            case DeviceLabelsChanged(device_id=did, labels=labels):
                await view.labels_changed(conn, _stamp(did, event), labels)
            case DeviceCameOnline(device_id=did, seen_at=seen_at):
                await view.presence(conn, _stamp(did, event), True, seen_at)
            case DeviceWentOffline(device_id=did, last_seen_at=last_seen):
                await view.presence(conn, _stamp(did, event), False, last_seen)
            case _:
                pass


def _stamp(device_id: str, event: Envelope) -> Stamp:
    return Stamp(device_id, event.occurred_at, event.version)
