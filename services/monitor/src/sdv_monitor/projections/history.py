"""Per-device action history: what the registry, the rollouts and the device itself said
happened to a device, one line each, in the order the monitor learnt it."""

from __future__ import annotations

import asyncpg

from sdv_events.envelope import Envelope
from sdv_events.ids import split_stream_id
from sdv_events.registry import short_name
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
from sdv_events.schemas.rollouts import DeviceFailed, DeviceSucceeded, DeviceTargeted, DeviceTimedOut
from sdv_monitor.domain.app_state import change_of
from sdv_monitor.projections.facts import fact_of
from sdv_monitor.projections.writes import Writes, columns


def _device_line(data: object) -> str | None:
    match data:
        case DevicePreauthorized():
            return "pre-authorised"
        case DeviceAnnounced(capabilities=caps):
            return f"announced (agent {caps.agent_version}, {caps.arch})"
        case DeviceAccepted(admitted_by=by):
            return f"accepted ({by})"
        case DeviceRejected(reason=reason):
            return f"rejected{': ' + reason if reason else ''}"
        case DeviceDecommissioned():
            return "decommissioned"
        case DeviceCapabilitiesUpdated(capabilities=caps):
            return f"capabilities updated (agent {caps.agent_version})"
        case DeviceLabelsChanged(labels=labels):
            return "labels: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        case DeviceCameOnline():
            return "came online"
        case DeviceWentOffline():
            return "went offline"
    return None


def _rollout_line(data: object) -> tuple[str, str] | None:
    match data:
        case DeviceTargeted(device_id=d, wave=wave):
            return d, f"targeted in wave {wave}"
        case DeviceSucceeded(device_id=d):
            return d, "succeeded"
        case DeviceFailed(device_id=d, reason=reason):
            return d, f"failed: {reason}"
        case DeviceTimedOut(device_id=d):
            return d, "timed out"
    return None


class DeviceHistory:
    # Declared in sql/006_history.sql.
    tables = ("device_history",)

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.device_history"

    @property
    def _insert(self) -> str:
        return (f"INSERT INTO {self.table} SELECT * FROM unnest($1::text[], $2::uuid[], "
                "$3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) "
                "ON CONFLICT DO NOTHING")

    def apply(self, writes: Writes, event: Envelope) -> None:
        if (row := self.row(event)) is not None:
            writes.add(self.table, self._insert, *columns([row]))

    async def insert(self, conn: asyncpg.Connection, rows: list[tuple[object, ...]]) -> None:
        """Lines of a batch of events in one statement."""
        if rows:
            await conn.execute(self._insert, *columns(rows))

    def row(self, event: Envelope) -> tuple[object, ...] | None:
        category, entity = split_stream_id(event.stream_id)
        if category == "device" and (line := _device_line(event.data)) is not None:
            return _line(entity, event, "registry", line)
        if category == "rollout" and (found := _rollout_line(event.data)) is not None:
            device_id, line = found
            return _line(device_id, event, "orchestrator", f"rollout {entity}: {line}",
                         rollout_id=entity)
        if category == "facts" and (fact := fact_of(event)) is not None:
            change = change_of(fact)
            if change is not None:
                return _line(fact.device_id, event, "device", f"{fact.app} {change.action}",
                             app=fact.app, rollout_id=fact.rollout_id, at=event.data.occurred_at)
        return None


def _line(device_id: str, event: Envelope, source: str, summary: str, *, app: str | None = None,
          rollout_id: str | None = None, at: object = None) -> tuple[object, ...]:
    return (device_id, event.event_id, at or event.occurred_at, source, short_name(event.type), app,
            rollout_id, summary[:1000])
