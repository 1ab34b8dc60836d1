"""The one service runtime: every `app.py` hands its routers to `run_service`, which opens the
service's event store schema, connects the broker, provisions JetStream, runs the relay beside the
handlers, answers `sdv.cmd.<service>.ping` and, on SIGTERM/SIGINT, stops in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Self

import msgspec
import structlog
from faststream.nats import NatsBroker, NatsRouter
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pydantic import BaseModel, model_validator

from sdv_events.bus import CommandClient, CommandError, RequestInfo, make_broker, register_command
from sdv_events.logs import configure_logging
from sdv_events.provisioning import provision
from sdv_events.relay import Relay
from sdv_events.store import EventStore

log = structlog.get_logger("sdv.service")
SHUTDOWN_GRACE_S = 10.0


class ServiceSettings(BaseModel):
    """What every service needs; a service's own settings subclass this."""

    service: str
    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # The PostgreSQL schema of the service's event store (`schema` would shadow BaseModel.schema).
    schema_name: str = ""
    log_level: str = "INFO"
    # A `.creds` file (user JWT + nkey seed) for a NATS server in operator mode; None = no auth.
    nats_credentials: str | None = None

    @model_validator(mode="after")
    def _default_schema(self) -> Self:
        self.schema_name = self.schema_name or self.service
        return self

    @classmethod
    def from_env(cls, service: str, **overrides: Any) -> Self:
        """`SDV_NATS_URL`, `SDV_DATABASE_URL`, `SDV_<SERVICE>_SCHEMA`, `SDV_LOG_LEVEL`,
        `SDV_NATS_CREDS`."""
        names = {"nats_url": "SDV_NATS_URL", "database_url": "SDV_DATABASE_URL",
                 "schema_name": f"SDV_{service.upper()}_SCHEMA", "log_level": "SDV_LOG_LEVEL",
                 "nats_credentials": "SDV_NATS_CREDS"}
        values = {key: os.environ[env] for key, env in names.items() if os.environ.get(env)}
        return cls(service=service, **(values | overrides))


class Ping(msgspec.Struct, frozen=True):
    """Ask a service how it is: the reply is its `ServiceHealth`."""


class ServiceHealth(msgspec.Struct, frozen=True):
    service: str
    version: str
    uptime_s: float
    relay_published: int


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
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def spawn(self, work: Callable[[asyncio.Event], Coroutine[Any, Any, None]], name: str) -> None:
        """Run `work(stop)` until shutdown (projections, policies); it must return once stop is set."""
        self.tasks.append(asyncio.create_task(work(self.stop), name=name))


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

    store = await EventStore.open(settings.database_url, settings.schema_name)
    auth = {"user_credentials": settings.nats_credentials} if settings.nats_credentials else {}
    broker = make_broker(settings.nats_url, name, **auth)
    runtime: ServiceRuntime | None = None
    try:
        await broker.connect()
        # FastStream 0.7 keeps nats-py's JetStream context here (no public accessor).
        js = broker.config.connection_state.stream
        await provision(js)
        relay = Relay(store, js)

        async def ping(_: Ping, __: RequestInfo) -> ServiceHealth:
            return ServiceHealth(name, version, round(time.monotonic() - started, 3),
                                 relay.stats.published)

        health = NatsRouter()
        register_command(health, name, "ping", Ping, ping)
        for router in (*routers, health):
            broker.include_router(router)
        runtime = ServiceRuntime(settings, store, broker, js, stop)
        runtime.spawn(relay.run, "relay")
        if on_start is not None:
            await on_start(runtime)
        await broker.start()
        log.info("service_started", version=version, schema=settings.schema_name, nats=settings.nats_url)
        await stop.wait()
    finally:
        stop.set()
        if runtime is not None and runtime.tasks:
            _, pending = await asyncio.wait(runtime.tasks, timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await broker.stop()
        await store.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("service_stopped")
