"""Read models of the edge agent. The agent has no event store to project from: its one read model
is the reported state, a pure view of its app records (what `sdv_reported` and `sdv status` show)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sdv_edge_agent.domain.records import AppRecord
from sdv_events.schemas.deployment import ReportedApp, ReportedState


def reported_app(record: AppRecord) -> ReportedApp | None:
    shown = record.shown
    if record.state is None or shown is None:
        return None
    return ReportedApp(
        name=record.name, version=shown.version, digest=shown.digest, state=record.state.value,
        healthy=record.healthy, restarts=record.restarts,
        previous_version=record.previous.version if record.previous else None,
        last_error=record.last_error, pid=record.pid,
        started_at=datetime.fromtimestamp(record.started_at, UTC) if record.started_at else None,
    )


def reported_state(device_id: str, revision: int, records: Iterable[AppRecord], *,
                   agent_version: str, now: datetime) -> ReportedState:
    apps = {r.name: app for r in records if (app := reported_app(r)) is not None}
    return ReportedState(device_id=device_id, desired_revision=revision, apps=apps,
                         agent_version=agent_version, updated_at=now)
