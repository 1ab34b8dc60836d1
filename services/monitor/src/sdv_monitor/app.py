"""Composition root of the monitor: settings → the fact recorder (agents' facts into its own
store), the read models (one projection, built from the services' stores), the reported-state
watch, NATS queries and the HTTP API, on the shared service runtime."""

from __future__ import annotations

import asyncio
import gc

from sdv_events.processing import ConsumerRunner, HistorySource, OwnThenHistory, StoreSource
from sdv_events.service import ServiceHealth, ServiceRuntime, run_service, service_version
from sdv_events.settings import settings_or_exit
from sdv_monitor.adapters.alert_watch import AlertWatch
from sdv_monitor.adapters.commands import command_router
from sdv_monitor.adapters.console_tail import ConsoleTail
from sdv_monitor.adapters.fact_recorder import FactRecorder
from sdv_monitor.adapters.heartbeats import HeartbeatTracker
from sdv_monitor.adapters.http_api import create_app, serve_http
from sdv_monitor.adapters.live import LiveFeed
from sdv_monitor.adapters.metrics import Metrics
from sdv_monitor.adapters.reported import ReportedStates
from sdv_monitor.adapters.view_changes import ViewChanges
from sdv_monitor.domain.alerts import Thresholds
from sdv_monitor.projections import MonitorViews
from sdv_monitor.queries import Queries
from sdv_monitor.settings import SERVICE, MonitorSettings, load_settings


async def serve(settings: MonitorSettings, stop: asyncio.Event | None = None) -> None:
    async def on_start(runtime: ServiceRuntime) -> None:
        schema, pool = settings.schema_name, runtime.store.pool
        views = MonitorViews(schema)
        reported = ReportedStates(pool, schema, runtime.js)
        async with pool.acquire() as conn:
            await views.create(conn)
            await reported.create(conn)
        nc = runtime.broker.config.connection_state.connection
        source = OwnThenHistory(StoreSource(runtime.store), HistorySource(nc))
        for consumer in (FactRecorder(runtime.store), views):
            runtime.run_consumer(ConsumerRunner(pool, schema, runtime.js, consumer, source=source,
                                                build_from=runtime.store, service=SERVICE, nc=nc))
        runtime.spawn(reported.run, "reported_states")
        heartbeats = HeartbeatTracker()
        queries = Queries(pool, schema, live=heartbeats.with_live_health)

        async def readiness() -> list[str]:
            health = await runtime.health(SERVICE, service_version(SERVICE), 0.0, 0)
            return list(health.problems)

        thresholds = Thresholds(offline_after_s=settings.alert_offline_after_s,
                                crash_restarts=settings.alert_crash_restarts)
        alerts = AlertWatch(runtime.store, schema, nc, heartbeats, readiness, thresholds=thresholds,
                            every_s=settings.alert_every_s, service_grace_s=settings.alert_service_grace_s)
        runtime.spawn(alerts.run, "alerts")
        runtime.broker.include_router(command_router(queries, alerts))

        live = LiveFeed(runtime.js)
        runtime.spawn(live.run, "live_feed")
        changed = ViewChanges(pool, schema)
        runtime.spawn(changed.run, "view_changes", probe=changed.status)

        async def health() -> dict[str, ServiceHealth | None]:
            own = await runtime.health(SERVICE, service_version(SERVICE), 0.0, 0)
            return {**alerts.health, SERVICE: own}

        metrics = Metrics(pool, schema, live, health)
        api = create_app(queries, readiness, live, metrics, ConsoleTail(runtime.js), changed=changed,
                         version=service_version(SERVICE))
        runtime.spawn(lambda stop: serve_http(api, settings.http_host, settings.http_port, stop),
                      "http_api")
        # What start-up made (modules, models, routes: most of the heap) lives as long as the
        # process: kept out of the collector's full passes, which otherwise stop the event loop,
        # and the live streams with it, for tenths of a second on a busy machine.
        gc.freeze()

    await run_service(SERVICE, settings, on_start=on_start, stop=stop)


def main() -> None:
    asyncio.run(serve(settings_or_exit(f"python -m sdv_{SERVICE}", load_settings)))
