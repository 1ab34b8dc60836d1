"""Alerts: one row per alert (raised → acknowledged → resolved), from the monitor's own alert
events, with who acknowledged it."""

from __future__ import annotations

import asyncpg

from sdv_events.envelope import Envelope
from sdv_events.schemas.monitor import AlertAcknowledged, AlertRaised, AlertResolved
from sdv_monitor.projections.writes import Writes


class Alerts:
    tables = ("alerts",)

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.alerts"

    async def create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {self.table} (
                alert_id text PRIMARY KEY, kind text NOT NULL, subject text NOT NULL,
                severity text NOT NULL, state text NOT NULL, message text NOT NULL,
                device_id text, rollout_id text, raised_at timestamptz NOT NULL,
                acknowledged_by text, acknowledged_at timestamptz, resolved_at timestamptz,
                resolution text);
            CREATE INDEX IF NOT EXISTS {self.table.replace('.', '_')}_state
                ON {self.table} (state, raised_at)""")

    def apply(self, writes: Writes, event: Envelope) -> None:
        at = event.occurred_at
        match event.data:
            case AlertRaised() as a:
                writes.add(
                    self.table,
                    f"INSERT INTO {self.table} (alert_id, kind, subject, severity, state, message, "
                    "device_id, rollout_id, raised_at) VALUES ($1,$2,$3,$4,'open',$5,$6,$7,$8) "
                    "ON CONFLICT DO NOTHING",
                    a.alert_id, a.kind, a.subject, a.severity, a.message, a.device_id, a.rollout_id, at)
            case AlertAcknowledged(alert_id=alert_id):
                writes.add(
                    self.table, f"UPDATE {self.table} SET state = 'acknowledged', acknowledged_by = $2, "
                    "acknowledged_at = $3 WHERE alert_id = $1 AND state = 'open'", alert_id, event.actor, at)
            case AlertResolved(alert_id=alert_id, reason=reason):
                writes.add(self.table, f"UPDATE {self.table} SET state = 'resolved', resolved_at = $2, "
                           "resolution = $3 WHERE alert_id = $1", alert_id, at, reason)
