"""Prometheus `/metrics`: the fleet (devices by state, apps by state), rollouts in progress,
open alerts, events seen per category and service, and each service's health — its relay's
backlog and its consumers' lag, from the pings the alert rules make anyway. Built fresh at each
scrape from the read models (a scrape is one round of small queries)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from sdv_events.service import ServiceHealth
from sdv_events.stream_owners import STREAM_OWNERS
from sdv_monitor.adapters.live import LiveFeed


class Metrics:
    def __init__(self, pool: asyncpg.Pool, schema: str, live: LiveFeed,
                 health: Callable[[], Awaitable[Mapping[str, ServiceHealth | None]]]) -> None:
        self.pool, self.s, self.live, self.health = pool, schema, live, health

    async def render(self) -> tuple[bytes, str]:
        r = CollectorRegistry()
        s = self.s
        async with self.pool.acquire() as conn:
            devices = await conn.fetch(f"SELECT status, online, count(*) AS n FROM {s}.devices GROUP BY 1, 2")
            apps = await conn.fetch(f"SELECT app, state, count(*) AS n FROM {s}.device_apps GROUP BY 1, 2")
            rollouts = await conn.fetch(
                f"SELECT rollout_id, app, version, status, devices, succeeded, failed, current_wave, waves "
                f"FROM {s}.rollouts WHERE status IN ('created', 'running', 'waiting', 'paused') "
                f"OR updated_at > now() - interval '1 hour'")
            alerts = await conn.fetch(f"SELECT kind, severity, count(*) AS n FROM {s}.alerts "
                                      "WHERE state <> 'resolved' GROUP BY 1, 2")
        g = Gauge("sdv_devices", "Devices by admission status and presence", ["status", "online"], registry=r)
        for row in devices:
            g.labels(row["status"], str(row["online"]).lower()).set(row["n"])
        g = Gauge("sdv_apps", "App instances on devices by lifecycle state", ["app", "state"], registry=r)
        for row in apps:
            g.labels(row["app"], row["state"]).set(row["n"])
        labels = ["rollout_id", "app", "version", "status"]
        targeted = Gauge("sdv_rollout_devices", "Devices a rollout plans to update", labels, registry=r)
        done = Gauge("sdv_rollout_devices_done", "Devices of a rollout by outcome", [*labels, "outcome"],
                     registry=r)
        wave = Gauge("sdv_rollout_wave", "A rollout's current wave (0-based) and its number of waves",
                     [*labels, "of"], registry=r)
        for row in rollouts:
            key = (row["rollout_id"], row["app"], row["version"], row["status"])
            targeted.labels(*key).set(row["devices"])
            done.labels(*key, "succeeded").set(row["succeeded"])
            done.labels(*key, "failed").set(row["failed"])
            wave.labels(*key, str(row["waves"])).set(row["current_wave"])
        g = Gauge("sdv_alerts_open", "Alerts not resolved", ["kind", "severity"], registry=r)
        for row in alerts:
            g.labels(row["kind"], row["severity"]).set(row["n"])
        c = Counter("sdv_events_seen", "Events the monitor saw on the bus since it started",
                    ["category", "service"], registry=r)
        for category, n in self.live.by_category.items():
            c.labels(category, STREAM_OWNERS.get(category, "device")).inc(n)
        self._health(r, await self.health())
        return generate_latest(r), CONTENT_TYPE_LATEST

    @staticmethod
    def _health(r: CollectorRegistry, health: Mapping[str, ServiceHealth | None]) -> None:
        up = Gauge("sdv_service_healthy", "1 when the service answers ping and reports no problem",
                   ["service"], registry=r)
        behind = Gauge("sdv_relay_behind_events", "Events stored but not yet on the bus", ["service"],
                       registry=r)
        oldest = Gauge("sdv_relay_oldest_unpublished_seconds", "Age of the oldest unpublished event",
                       ["service"], registry=r)
        lag = Gauge("sdv_consumer_lag_seconds", "Age of the oldest message a consumer has not handled",
                    ["service", "consumer"], registry=r)
        for service, h in health.items():
            up.labels(service).set(1 if h is not None and h.healthy else 0)
            for task in h.tasks if h is not None else []:
                if task.name == "relay":
                    behind.labels(service).set(float(task.detail.get("behind", 0)))
                    oldest.labels(service).set(float(task.detail.get("oldest_unpublished_age_s", 0)))
                elif "applied" in task.detail:
                    lag.labels(service, task.name).set(float(task.detail.get("oldest_unprocessed_age_s", 0)))
