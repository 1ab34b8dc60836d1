"""Alerts: one row per alert (raised → acknowledged → resolved), from the monitor's own alert
events, with who acknowledged it."""

from __future__ import annotations

from sdv_events.envelope import Envelope
from sdv_events.schemas.monitor import AlertAcknowledged, AlertRaised, AlertResolved
from sdv_monitor.projections.writes import Writes


class Alerts:
    # Declared in sql/005_alerts.sql.
    tables = ("alerts",)

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.alerts"

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
