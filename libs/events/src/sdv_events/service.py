"""The one service runtime: every `app.py` hands its routers to `run_service`, which opens the
service's event store schema, connects the broker, provisions JetStream, runs the relay beside the
handlers under a `Supervisor`, answers `sdv.cmd.<service>.ping` with the health of every task
(relay lag included) and, on SIGTERM/SIGINT, stops in reverse order. A task that fails for good
stops the service with `ServiceFailed` (a non-zero exit)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from typing import Any, Self

import msgspec
import structlog
from faststream.nats import NatsBroker, NatsRouter
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pydantic import BaseModel, model_validator

from sdv_events.auth.client_tls import CA_ENV
from sdv_events.bus import CommandClient, CommandError, RequestInfo, make_broker, register_command
from sdv_events.bus.tracing import otlp_endpoint
from sdv_events.history import HISTORY_COMMAND, HistoryQuery, history_handler
from sdv_events.idempotency import DEFAULT_KEY_TTL, key_pruner
from sdv_events.logs import configure_logging
from sdv_events.processing.admin import REBUILD_COMMAND, RebuildReadModel, rebuild_handler
from sdv_events.processing.runner import ConsumerRunner
from sdv_events.provisioning import provision
from sdv_events.relay import Relay
from sdv_events.store import EventStore
from sdv_events.store.chain import VERIFY_COMMAND, ChainReport, VerifyChain, verify_chain
from sdv_events.store.postgres import MAX_EVENT_BYTES
from sdv_events.supervision import Probe, Supervisor, TaskHealth, Work

log = structlog.get_logger("sdv.service")
SHUTDOWN_GRACE_S = 10.0


class ServiceSettings(BaseModel):
    """What every service needs; a service's own settings subclass this."""

    service: str
    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # The PostgreSQL schema of the service's event store (`schema` would shadow BaseModel.schema).
    schema_name: str = ""
    # False where the schema's owner sets the event store up and this service's role may not
    # (`sdv up`'s role per service, sdv_events/store/roles.py): then only checked at start.
    schema_setup: bool = True
    log_level: str = "INFO"
    # A `.creds` file (user JWT + nkey seed) for a NATS server in operator mode; None = no auth.
    nats_credentials: str | None = None
    # The CA certificate the NATS server's certificate must be signed by (pinned: no other CA is
    # trusted); None = the system's authorities, for a server that requires TLS at all.
    nats_ca: str | None = None
    # The largest event `append` stores (encoded body + metadata), below NATS's max payload.
    max_event_bytes: int = MAX_EVENT_BYTES
    # Health turns red when the oldest unpublished event is older than this.
    relay_stuck_after_s: float = 30.0
    # How long a command's idempotency key returns its first outcome (then it is a new key).
    idempotency_ttl_s: float = DEFAULT_KEY_TTL.total_seconds()

    @model_validator(mode="after")
    def _default_schema(self) -> Self:
        self.schema_name = self.schema_name or self.service
        return self

    @classmethod
    def from_env(cls, service: str, **overrides: Any) -> Self:
        """`SDV_NATS_URL`, `SDV_DATABASE_URL`, `SDV_<SERVICE>_SCHEMA`, `SDV_LOG_LEVEL`,
        `SDV_NATS_CREDS`, `SDV_NATS_CA`, `SDV_MAX_EVENT_BYTES`, `SDV_IDEMPOTENCY_TTL_S`,
        `SDV_RELAY_STUCK_AFTER_S`, `SDV_SCHEMA_SETUP`."""
        names = {"nats_url": "SDV_NATS_URL", "database_url": "SDV_DATABASE_URL",
                 "schema_name": f"SDV_{service.upper()}_SCHEMA", "log_level": "SDV_LOG_LEVEL",
                 "nats_credentials": "SDV_NATS_CREDS", "nats_ca": CA_ENV,
                 "max_event_bytes": "SDV_MAX_EVENT_BYTES", "idempotency_ttl_s": "SDV_IDEMPOTENCY_TTL_S",
                 "relay_stuck_after_s": "SDV_RELAY_STUCK_AFTER_S", "schema_setup": "SDV_SCHEMA_SETUP"}
        values = {key: os.environ[env] for key, env in names.items() if os.environ.get(env)}
        return cls(service=service, **(values | overrides))


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
        await provision(js)
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
