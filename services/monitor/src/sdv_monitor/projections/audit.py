"""The audit trail: every event of every service and every device fact the monitor recorded,
one row each with who, what, when, where it belongs (device, rollout, package) and what caused
it — so `sdv audit` answers "which software ran on which vehicle, from when, approved by whom"
from one indexed table, also while the services that wrote the events are down."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from sdv_events.envelope import Envelope
from sdv_events.ids import split_stream_id
from sdv_events.schemas.monitor import DeviceFactRecorded
from sdv_events.schemas.rollouts import PolicySet, RolloutCreated
from sdv_events.stream_owners import owner_of
from sdv_monitor.projections.facts import fact_of
from sdv_monitor.projections.writes import Writes, columns

_json = msgspec.json.Encoder()


def _body(event: Envelope) -> Any:
    if isinstance(event.data, DeviceFactRecorded):
        return event.data.data  # the device's own words, not our wrapper
    return event.data  # encoded as it is (the JSON `to_builtins` would give, without the copy)


class AuditTrail:
    # Declared in sql/007_audit.sql.
    tables = ("audit_events",)

    def __init__(self, schema: str) -> None:
        self.s = schema
        self.table = f"{schema}.audit_events"

    def apply(self, writes: Writes, event: Envelope) -> None:
        writes.add(self.table, self._insert, *columns([self.row(event)]))

    async def insert(self, conn: asyncpg.Connection, rows: list[tuple[object, ...]]) -> None:
        """Rows of a batch of events in one statement (after the batch's other writes: a
        rollout's row, which names its app, is written by its RolloutCreated)."""
        if rows:
            await conn.execute(self._insert, *columns(rows))

    @property
    def _insert(self) -> str:
        # A rollout's later events name its app, as its RolloutCreated does: by the key of the
        # rollouts' table (its row was made by RolloutCreated, an earlier event). Not from this
        # table: "a row of the rollout with a package, LIMIT 1" was planned as a scan of the
        # whole trail per event once it held a few rollouts.
        return (f"INSERT INTO {self.table} SELECT e, sv, st, v, t, at, ac, co, ca, d, r, "
                f"CASE WHEN byr THEN (SELECT app FROM {self.s}.rollouts WHERE rollout_id = r) "
                "ELSE p END, j::json "
                "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], "
                "$6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], "
                "$12::text[], $13::bool[], $14::text[]) "
                "AS u(e, sv, st, v, t, at, ac, co, ca, d, r, p, byr, j) ON CONFLICT (event_id) DO NOTHING")

    def row(self, event: Envelope) -> tuple[object, ...]:
        category, entity = split_stream_id(event.stream_id)
        data = event.data
        device = rollout = package = None
        stream, occurred_at, type_ = event.stream_id, event.occurred_at, event.type
        service = owner_of(event.stream_id) or "unknown"
        package_of_rollout = False
        if category == "device":
            device = entity
        elif category == "package":
            package = entity
        elif category == "policy":
            package = data.policy.app if isinstance(data, PolicySet) else None
        elif category == "rollout":
            rollout = entity
            device = getattr(data, "device_id", None)
            if isinstance(data, RolloutCreated):
                package = data.package.name
            else:
                package_of_rollout = True
        elif category == "alert":
            device, rollout = getattr(data, "device_id", None), getattr(data, "rollout_id", None)
        elif category == "facts":
            # Shown as the device's fact: its stream, type and time, recorded by the monitor.
            device, service = entity, "device"
            if isinstance(data, DeviceFactRecorded):
                stream, type_, occurred_at = f"agent-{entity}", data.fact_type, data.occurred_at
            fact = fact_of(event)
            if fact is not None:
                rollout, package = fact.rollout_id, fact.app
        return (event.event_id, service, stream, event.version, type_, occurred_at, event.actor,
                event.correlation_id, event.causation_id, device, rollout, package, package_of_rollout,
                _json.encode(_body(event)).decode().replace("\\u0000", "\\ufffd"))
