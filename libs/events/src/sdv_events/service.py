"""The one service runtime: every `app.py` hands its routers to `run_service`, which opens the
service's event store schema, connects the broker, provisions JetStream, runs the relay beside the
handlers under a `Supervisor`, answers `sdv.cmd.<service>.ping` with the health of every task
(relay lag included) and, on SIGTERM/SIGINT, stops in reverse order. A task that fails for good
stops the service with `ServiceFailed` (a non-zero exit)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from typing import Any

import msgspec
import structlog
from faststream.nats import NatsBroker, NatsRouter
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from sdv_events.bus import CommandClient, CommandError, RequestInfo, make_broker, register_command
from sdv_events.bus.tracing import otlp_endpoint
from sdv_events.history import HISTORY_COMMAND, HistoryQuery, history_handler
from sdv_events.idempotency import key_pruner
from sdv_events.logs import configure_logging
from sdv_events.processing.admin import REBUILD_COMMAND, RebuildReadModel, rebuild_handler
from sdv_events.processing.runner import ConsumerRunner
from sdv_events.provisioning import provision
from sdv_events.relay import Relay
from sdv_events.service_settings import ServiceSettings
from sdv_events.store import EventStore
from sdv_events.store.chain import VERIFY_COMMAND, ChainReport, VerifyChain, verify_chain
from sdv_events.supervision import Probe, Supervisor, TaskHealth, Work

__all__ = ["ServiceHealth", "ServiceRuntime", "ServiceSettings", "run_service", "wait_until_ready"]

log = structlog.get_logger("sdv.service")
SHUTDOWN_GRACE_S = 10.0


class Ping(msgspec.Struct, frozen=True):
    """Ask a service how it is: the reply is its `ServiceHealth`."""


class ServiceHealth(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    version: str
    uptime_s: float
    relay_published: int
    # False when any task failed, is restarting, or reports itself stuck (a relay whose oldest
    # unpublished event is too old, a consumer that stopped at an event it cannot read).
    healthy: bool = True
    problems: list[str] = []
    tasks: list[TaskHealth] = []


async def wait_until_ready(
    nc: NatsClient, service: str, *, task: asyncio.Task[Any] | None = None, timeout: float = 15.0
) -> ServiceHealth:
    """Until `service` answers ping. If `task` (the service running in-process) ends first, its
    exception is raised; when time runs out, `TimeoutError`."""
    client = CommandClient(nc, timeout=1.0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.call(service, "ping", Ping(), ServiceHealth)
        except CommandError:
            if task is not None and task.done():
                task.result()
                raise RuntimeError(f"{service} stopped before it answered ping") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} did not answer ping within {timeout:.0f}s") from None
            await asyncio.sleep(0.1)


def service_version(service: str) -> str:
    try:
        return metadata.version(f"sdv-{service.replace('_', '-')}")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class ServiceRuntime:
    """Handles the composition root wires into its handlers, projections and policies."""

    settings: ServiceSettings
    store: EventStore
    broker: NatsBroker
    js: JetStreamContext
    stop: asyncio.Event
    supervisor: Supervisor = field(init=False)
    # The service's consumers by name: `rebuild` serves their read models.
    consumers: dict[str, ConsumerRunner] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.stop)

    def run_consumer(self, runner: ConsumerRunner) -> None:
        """Spawn a consumer runner (supervised, its lag in ping) and offer its read model to
        `sdv.cmd.<service>.rebuild`."""
        self.consumers[runner.name] = runner
        if not runner.max_lag_chosen:
            runner.max_lag_s = self.settings.consumer_max_lag_s
        self.spawn(runner.run, runner.name, probe=runner.status)

    def spawn(self, work: Work, name: str, *, probe: Probe | None = None) -> None:
        """Run `work(stop)` until shutdown (projections, policies), supervised: restarted when
        it fails, the service stopped when it keeps failing. It must return once stop is set.
        `probe` reports the task's own health (lag) in ping."""
        self.supervisor.spawn(work, name, probe=probe)

    async def health(self, name: str, version: str, uptime_s: float, published: int) -> ServiceHealth:
        tasks = await self.supervisor.health()
        problems = [f"{t.name}: {t.reason or t.state}" for t in tasks if not t.healthy]
        return ServiceHealth(service=name, version=version, uptime_s=uptime_s,
                             relay_published=published, healthy=not problems, problems=problems,
                             tasks=tasks)


def health_router(
    name: str,
    health: Callable[[], Awaitable[ServiceHealth]],
    store: EventStore,
    consumers: Mapping[str, ConsumerRunner],
    nc: NatsClient,
) -> NatsRouter:
    """What every service answers besides its own commands: `sdv.cmd.<name>.ping` (its health),
    `history`, `verify` (its hash chains) and `rebuild` (a read model)."""

    async def ping(_: Ping, __: RequestInfo) -> ServiceHealth:
        return await health()

    async def verify(_: VerifyChain, info: RequestInfo) -> ChainReport:
        log.info("chain_verification_requested", actor=info.actor)
        return await verify_chain(store.pool, store.schema)

    router = NatsRouter()
    register_command(router, name, "ping", Ping, ping)
    register_command(router, name, HISTORY_COMMAND, HistoryQuery, history_handler(store))
    register_command(router, name, VERIFY_COMMAND, VerifyChain, verify)
    register_command(router, name, REBUILD_COMMAND, RebuildReadModel,
                     rebuild_handler(consumers, store, name, nc))
    return router


async def run_service(
    name: str,
    settings: ServiceSettings,
    *,
    routers: Iterable[NatsRouter] = (),
    on_start: Callable[[ServiceRuntime], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run service `name` until SIGTERM/SIGINT (or `stop`, for embedding in tests).

    `on_start` runs once the store is open and JetStream provisioned, before the subscribers
    start: the place to include routers that need the store and to `spawn` background work.
    """
    configure_logging(name, level=settings.log_level)
    stop = stop or asyncio.Event()
    started = time.monotonic()
    version = service_version(name)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # First: an unusable CA file (NatsCaError) stops the service before anything is opened.
    broker = make_broker(settings.nats_url, name, credentials=settings.nats_credentials,
                         ca_file=settings.nats_ca)
    store = await EventStore.open(settings.database_url, settings.schema_name,
                                  setup=settings.schema_setup,
                                  max_event_bytes=settings.max_event_bytes,
                                  idempotency_ttl=timedelta(seconds=settings.idempotency_ttl_s))
    runtime: ServiceRuntime | None = None
    try:
        await broker.connect()
        # FastStream 0.7 keeps nats-py's JetStream context here (no public accessor).
        js = broker.config.connection_state.stream
        await provision(js, retention=settings.retention)
        relay = Relay(store, js, stuck_after_s=settings.relay_stuck_after_s)
        runtime = ServiceRuntime(settings, store, broker, js, stop)
        service_runtime = runtime

        async def health_now() -> ServiceHealth:
            return await service_runtime.health(
                name, version, round(time.monotonic() - started, 3), relay.stats.published)

        health = health_router(name, health_now, store, runtime.consumers,
                               broker.config.connection_state.connection)
        for router in (*routers, health):
            broker.include_router(router)
        runtime.spawn(relay.run, "relay", probe=relay.status)
        runtime.spawn(key_pruner(store), "idempotency_pruner")
        if on_start is not None:
            await on_start(runtime)
        await broker.start()
        log.info("service_started", version=version, schema=settings.schema_name, nats=settings.nats_url,
                 traces_to=otlp_endpoint())
        await stop.wait()
    finally:
        stop.set()
        if runtime is not None:
            await runtime.supervisor.wait_stopped(SHUTDOWN_GRACE_S)
        with contextlib.suppress(Exception):
            await broker.stop()
        await store.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("service_stopped")
    failed = runtime.supervisor.failed if runtime is not None else None
    if failed is not None:
        log.error("service_failed", task=failed.task, error=repr(failed.cause))
        raise failed
