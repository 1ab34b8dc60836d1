"""Software inventory: per device and app, what should run (version, rollout — from the
orchestrator's rollout events) and what runs (installed version, lifecycle state, health, last
error, since when — from the device's recorded facts). Restarts and live metrics come from the
agents' reported state (`adapters/reported.py`), joined at query time: they are not events."""

from __future__ import annotations

from sdv_events.envelope import Envelope
from sdv_events.ids import split_stream_id
from sdv_events.schemas.rollouts import (
    DevicesPlanned,
    DeviceTargeted,
    PreviousPackages,
    RollbackStarted,
    RollbackStartedV1,
    RolloutCreated,
    RolloutPlannedV1,
)
from sdv_monitor.domain.app_state import change_of
from sdv_monitor.projections.facts import fact_of
from sdv_monitor.projections.writes import Writes


class Inventory:
    # Declared in sql/002_inventory.sql.
    tables = ("device_apps", "inventory_rollouts", "inventory_previous", "inventory_previous_packages")

    def __init__(self, schema: str) -> None:
        self.s = schema

    def apply(self, writes: Writes, event: Envelope) -> None:
        category, entity = split_stream_id(event.stream_id)
        if category == "rollout":
            self._rollout(writes, entity, event)
        elif category == "facts":
            self._fact(writes, event)

    def _rollout(self, writes: Writes, rid: str, event: Envelope) -> None:
        s = self.s
        match event.data:
            case RolloutCreated(package=p):
                writes.add(f"{s}.inventory_rollouts",
                           f"INSERT INTO {s}.inventory_rollouts VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING",
                           rid, p.name, p.version, p.digest)
            case PreviousPackages(first=first, packages=packages):
                writes.add(f"{s}.inventory_previous_packages",
                           f"INSERT INTO {s}.inventory_previous_packages "
                           "SELECT $1, r, v, d FROM unnest($2::int[], $3::text[], $4::text[]) AS u(r, v, d) "
                           "ON CONFLICT DO NOTHING",
                           rid, [first + i for i in range(len(packages))], [p.version for p in packages],
                           [p.digest for p in packages])
            case DevicesPlanned(devices=devices):
                previous = [d for d in devices if d.previous is not None]
                if previous:
                    writes.add(f"{s}.inventory_previous",
                               f"INSERT INTO {s}.inventory_previous (rollout_id, device_id, ref) "
                               "SELECT $1, d, r FROM unnest($2::text[], $3::int[]) AS u(d, r) "
                               "ON CONFLICT DO NOTHING",
                               rid, [d.device_id for d in previous], [d.previous for d in previous])
            case RolloutPlannedV1(previous=previous):
                known = [p for p in previous if p.package is not None]
                if known:
                    writes.add(f"{s}.inventory_previous",
                               f"INSERT INTO {s}.inventory_previous "
                               "SELECT $1, d, -1, v, g FROM unnest($2::text[], $3::text[], $4::text[]) "
                               "AS u(d, v, g) ON CONFLICT DO NOTHING",
                               rid, [p.device_id for p in known],
                               [p.package.version for p in known if p.package is not None],
                               [p.package.digest for p in known if p.package is not None])
            case DeviceTargeted(device_id=d):
                writes.add(f"{s}.device_apps", f"""
                    INSERT INTO {s}.device_apps (device_id, app, desired_version, desired_digest,
                        desired_rollout, since, updated_at)
                    SELECT $1, app, version, digest, rollout_id, $3, $3
                    FROM {s}.inventory_rollouts WHERE rollout_id = $2
                    ON CONFLICT (device_id, app) DO UPDATE SET desired_version = excluded.desired_version,
                        desired_digest = excluded.desired_digest, desired_rollout = excluded.desired_rollout,
                        updated_at = greatest(device_apps.updated_at, excluded.updated_at)""",
                    d, rid, event.occurred_at)
            case RollbackStarted() | RollbackStartedV1():
                # Devices this rollout still owns go back to what they ran before it (or lose the app).
                writes.add(f"{s}.device_apps", f"""
                    UPDATE {s}.device_apps a SET
                        desired_version = coalesce(p.version, pp.version),
                        desired_digest = coalesce(p.digest, pp.digest), desired_rollout = NULL,
                        updated_at = greatest(a.updated_at, $2)
                    FROM {s}.device_apps a2
                    LEFT JOIN {s}.inventory_previous p ON p.rollout_id = $1 AND p.device_id = a2.device_id
                    LEFT JOIN {s}.inventory_previous_packages pp ON pp.rollout_id = $1 AND pp.ref = p.ref
                    WHERE a.device_id = a2.device_id AND a.app = a2.app AND a.desired_rollout = $1""",
                    rid, event.occurred_at)

    def _fact(self, writes: Writes, event: Envelope) -> None:
        fact = fact_of(event)
        change = change_of(fact) if fact is not None else None
        if fact is None or change is None:
            return
        installed_version = change.installed_version or (fact.version if change.installed else None)
        installed_digest = fact.digest if change.installed and change.installed_version is None else None
        at = event.data.occurred_at
        writes.add(f"{self.s}.device_apps", f"""
            INSERT INTO {self.s}.device_apps AS a (device_id, app, installed_version, installed_digest,
                state, healthy, last_error, fact_rollout, since, updated_at)
            VALUES ($1, $2, $3, $4, $5, coalesce($6, false), $7, $8, $9, $9)
            ON CONFLICT (device_id, app) DO UPDATE SET
                installed_version = CASE WHEN $10 THEN NULL ELSE coalesce($3, a.installed_version) END,
                installed_digest = CASE WHEN $10 THEN NULL
                                        WHEN $3 IS NOT NULL THEN $4 ELSE a.installed_digest END,
                since = CASE WHEN a.state = $5 THEN a.since ELSE $9 END,
                state = $5, healthy = coalesce($6, a.healthy),
                last_error = CASE WHEN $11 THEN NULL ELSE coalesce($7, a.last_error) END,
                fact_rollout = coalesce($8, a.fact_rollout), updated_at = greatest(a.updated_at, $9)""",
            fact.device_id, fact.app, installed_version, installed_digest, change.state, change.healthy,
            change.last_error, fact.rollout_id, at, change.removed, change.clear_error)
