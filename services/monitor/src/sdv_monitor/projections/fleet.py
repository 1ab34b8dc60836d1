"""Fleet: one row per device — admission, presence, labels, capabilities, agent version —
from the registry's device events."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

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
from sdv_monitor.projections.writes import Writes

_json = msgspec.json.Encoder()


def _caps(caps: Any) -> dict[str, Any]:
    return {"capabilities": _json.encode(caps).decode(), "agent_version": caps.agent_version,
            "arch": caps.arch, "hardware_type": caps.hardware_type}


@functools.lru_cache(maxsize=64)  # a few column sets, event after event
def _upsert_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ["device_id", "created_at", "updated_at", *columns]
    updates = ", ".join(f"{c} = excluded.{c}" for c in ["updated_at", *columns])
    marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    return (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) "
            f"ON CONFLICT (device_id) DO UPDATE SET {updates}")


@functools.lru_cache(maxsize=64)
def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=3))
    return f"UPDATE {table} SET updated_at = $2, {sets} WHERE device_id = $1"


class Fleet:
    # Declared in sql/001_fleet.sql.
    tables = ("devices",)

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.devices"

    def _upsert(self, writes: Writes, event: Envelope, **values: Any) -> None:
        writes.add(self.table, _upsert_sql(self.table, tuple(values)), event.data.device_id,
                   event.occurred_at, event.occurred_at, *values.values())

    def _update(self, writes: Writes, event: Envelope, **values: Any) -> None:
        writes.add(self.table, _update_sql(self.table, tuple(values)), event.data.device_id,
                   event.occurred_at, *values.values())

    def apply(self, writes: Writes, event: Envelope) -> None:
        match event.data:
            case DevicePreauthorized(labels=labels):
                self._upsert(writes, event, status="preauthorized", labels=_json.encode(labels).decode())
            case DeviceAnnounced(capabilities=caps):
                # As the registry folds it: a key announced (first, or after a rejection) waits.
                self._upsert(writes, event, status="pending", **_caps(caps))
            case DeviceAccepted(admitted_by=by):
                self._update(writes, event, status="accepted", admitted_by=by)
            case DeviceRejected():
                self._update(writes, event, status="rejected")
            case DeviceDecommissioned():
                self._update(writes, event, status="decommissioned", online=False)
            case DeviceCapabilitiesUpdated(capabilities=caps):
                self._update(writes, event, **_caps(caps))
            case DeviceLabelsChanged(labels=labels):
                self._update(writes, event, labels=_json.encode(labels).decode())
            case DeviceCameOnline(seen_at=seen_at):
                self._update(writes, event, online=True, last_seen_at=seen_at)
            case DeviceWentOffline(last_seen_at=last_seen):
                self._update(writes, event, online=False, last_seen_at=last_seen)
