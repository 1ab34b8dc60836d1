"""Composition root of the edge agent: settings → SQLite store, NATS link, installer, runtimes
(native; docker when an engine answers), KUKSA lookup → the `Agent` and its adapters (desired
watch, ops, publishers, heartbeat). `build_agent` wires one agent; `serve` runs it, and
`--simulate N` (simulation.py) runs N of them with a simulated runtime and installer; cli.py is
the command that picks one or the other.

Start order matters on a vehicle: local state first (apps re-adopted or restarted from SQLite
even with no network), the NATS link in the background, and everything that needs the bus waits
for it. On SIGTERM the agent stops supervising and exits; the apps keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import structlog

from sdv_edge_agent.adapters.desired_watch import DesiredWatch
from sdv_edge_agent.adapters.docker_runtime import DockerRuntime
from sdv_edge_agent.adapters.downloads import Downloader
from sdv_edge_agent.adapters.enrolment import Enrolment, capabilities
from sdv_edge_agent.adapters.heartbeat import HeartbeatSender, device_metrics
from sdv_edge_agent.adapters.id_secret import load_or_create_secret
from sdv_edge_agent.adapters.kuksa import Databroker
from sdv_edge_agent.adapters.link import NatsLink
from sdv_edge_agent.adapters.middleware import MqttBroker
from sdv_edge_agent.adapters.native import NativeRuntime
from sdv_edge_agent.adapters.ops import OpsServer
from sdv_edge_agent.adapters.packages import Installer
from sdv_edge_agent.adapters.publishers import FactOutbox, LogShipper, ReportedWriter
from sdv_edge_agent.adapters.signal_catalog import CatalogReporter
from sdv_edge_agent.adapters.signing_keys import TrustedKeys
from sdv_edge_agent.adapters.store import AgentStore
from sdv_edge_agent.adapters.vehicle_signals import SignalWatch
from sdv_edge_agent.application import Agent, AgentOptions
from sdv_edge_agent.domain.facts import IdSealer
from sdv_edge_agent.domain.restarts import RestartPolicy
from sdv_edge_agent.ports import HealthCommand, Runtime
from sdv_edge_agent.settings import AgentSettings, key_list
from sdv_events.desired_signing import DesiredVerifier
from sdv_events.envelope import TraceContext
from sdv_events.schemas.heartbeat import AppMetrics, Heartbeat

log = structlog.get_logger("sdv.agent")
FACT_RETENTION_S = 3600.0
LOG_LINES_KEPT = 200_000
PARTIAL_DOWNLOAD_KEPT_S = 7 * 24 * 3600.0
HOUSEKEEPING_S = 60.0
RESYNC_S = 30.0  # direct get of the desired key, the safety net beside the watch
MIDDLEWARE_WAIT_S = 10.0  # a first announce waits this long at most for the middleware lookup


def agent_version() -> str:
    try:
        return metadata.version("sdv-edge-agent")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def heartbeat_builder(agent: Agent, databroker: Databroker, settings: AgentSettings
                      ) -> Callable[[int], Heartbeat]:
    def build(seq: int) -> Heartbeat:
        apps = {}
        for name, sup in agent.supervisors.items():
            record = sup.record
            if record.state is None:
                continue
            usage = sup.instance.usage if sup.instance else None
            alive_since = record.started_at if record.pid else None
            apps[name] = AppMetrics(
                state=record.state.value, version=record.shown.version if record.shown else "",
                healthy=record.healthy, restarts=record.restarts, pid=record.pid,
                cpu_pct=usage.cpu_pct if usage else None, rss_bytes=usage.rss_bytes if usage else None,
                uptime_s=round(time.time() - alive_since, 1) if alive_since else None,
            )
        return Heartbeat(
            device_id=settings.device_id, seq=seq, sent_at=datetime.now(UTC),
            agent_version=agent.options.agent_version, desired_revision=agent.revision, apps=apps,
            device=device_metrics(settings.data_dir), databroker=databroker.found,
            limits=agent.limits,
        )

    return build


async def housekeeping(store: AgentStore, downloader: Downloader,
                       first_after_s: float = HOUSEKEEPING_S) -> None:
    await asyncio.sleep(first_after_s)
    while True:
        store.prune_facts(FACT_RETENTION_S)
        store.prune_logs(LOG_LINES_KEPT)
        downloader.prune(PARTIAL_DOWNLOAD_KEPT_S)
        await asyncio.sleep(HOUSEKEEPING_S)


@dataclass
class AgentParts:
    """One agent, wired: what `serve` runs once and the simulation (simulation.py) N times."""

    settings: AgentSettings
    store: AgentStore
    link: NatsLink
    agent: Agent
    facts: FactOutbox
    logs: LogShipper
    reported: ReportedWriter
    watch: DesiredWatch
    ops: OpsServer
    heartbeat: HeartbeatSender
    databroker: Databroker
    downloader: Downloader
    keys: TrustedKeys
    mqtt: MqttBroker
    catalog: CatalogReporter
    signals: SignalWatch
    enrolment: Enrolment | None = None
    phase: float = 0.0
    # Set once the vehicle's middleware was looked for: an announce waits for it (a while), so
    # that the first capabilities already name the databroker, its catalogue and the MQTT broker.
    middleware_known: asyncio.Event = field(default_factory=asyncio.Event)


def build_agent(settings: AgentSettings, *, runtimes: list[Runtime], installer: Installer,
                databroker: Databroker, agent_version: str, health_command: HealthCommand | None = None,
                phase: float = 0.0) -> AgentParts:
    """Store, link, agent and its adapters for `settings.device_id`. `phase` (0..1) shifts the
    periodic work (heartbeats, resyncs, housekeeping) within its period, so that many agents in
    one process do not all fire at once."""
    # Searchable, not listable: sandboxed app users reach their own version and HOME inside, while
    # the database (app config may hold secrets), downloads and console files stay the agent's.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o711)
    store = AgentStore(settings.data_dir / "agent.db")
    link = NatsLink(settings.nats_url, settings.device_id, creds=settings.nats_creds, ca=settings.nats_ca)
    sealer = IdSealer(settings.device_id, load_or_create_secret(settings.data_dir))
    facts = FactOutbox(link, store, settings.device_id, sealer)
    logs = LogShipper(link, store, settings.device_id, sealer)
    downloader = Downloader(link, settings.data_dir / "downloads")
    options = AgentOptions(
        device_id=settings.device_id, data_dir=settings.data_dir, agent_version=agent_version,
        stop_timeout_s=settings.stop_timeout_s, monitor_interval_s=settings.monitor_s,
        restart_policy=RestartPolicy(base_delay_s=settings.restart_base_s,
                                     max_delay_s=settings.restart_max_s,
                                     loop_crashes=settings.crash_loop, window_s=settings.crash_window_s),
    )
    reported: ReportedWriter | None = None
    mqtt = MqttBroker(settings.mqtt)
    catalog = CatalogReporter(databroker, settings.device_id, facts.emit)
    signals = SignalWatch(databroker)
    keys = TrustedKeys.of(key_list(settings.packager_public_key), key_list(settings.orchestrator_public_key),
                          settings.enrol_creds if settings.enrol else None)
    agent = Agent(
        options, store=store, installer=installer, runtimes=runtimes, facts=facts,
        download=downloader.fetch, databroker=databroker, signals=signals,
        desired_verifier=DesiredVerifier(keys.orchestrator),
        on_change=lambda: reported.wake() if reported else None, on_logs=logs.wake,
        health_command=health_command, mqtt=mqtt,
    )
    enrolment = _enrolment(settings, agent, databroker, mqtt, catalog, keys)

    def trust() -> None:
        installer.trust(keys.packager)
        agent.desired_verifier = DesiredVerifier(keys.orchestrator)

    keys.on_change(trust)
    if enrolment is not None:
        enrolment.stored_credentials()  # the keys it names count before any installed app starts
    trust()
    facts.trace_of = lambda app: desired_trace(agent, app)
    reported = ReportedWriter(link, settings.device_id, agent.reported)
    watch = DesiredWatch(link, settings.device_id, agent.receive_desired,
                         first_resync_s=RESYNC_S * (1 + phase))
    ops = OpsServer(link, agent, store, settings.device_id)
    heartbeat = HeartbeatSender(link, settings.device_id, settings.heartbeat_s,
                                heartbeat_builder(agent, databroker, settings),
                                first_after_s=settings.heartbeat_s * (1 + phase))

    async def flush_all() -> None:
        for flusher in (facts, logs, reported):
            flusher.wake()

    link.on_connect(watch.subscribe)
    link.on_connect(ops.subscribe)
    link.on_connect(flush_all)
    link.on_connect(heartbeat.beat_soon)
    return AgentParts(settings, store, link, agent, facts, logs, reported, watch, ops, heartbeat,
                      databroker, downloader, keys, mqtt, catalog, signals, enrolment, phase)


def _enrolment(settings: AgentSettings, agent: Agent, databroker: Databroker, mqtt: MqttBroker,
               catalog: CatalogReporter, keys: TrustedKeys) -> Enrolment | None:
    if not settings.enrol:
        return None
    enrolment: Enrolment | None = None

    def learn(jwt: str) -> None:
        assert enrolment is not None
        keys.learn(jwt, device_key=enrolment.public_key)

    enrolment = Enrolment(
        settings.nats_url, settings.device_id, settings.data_dir, enrol_creds=settings.enrol_creds,
        token=settings.fleet_token, ca=settings.nats_ca, on_credentials=learn,
        capabilities=lambda: capabilities(settings.data_dir, hardware_type=settings.hardware_type,
                                          agent_version=agent.options.agent_version,
                                          databroker=databroker.found, runtimes=agent.runtimes,
                                          python_version=agent.installer.python_full_version,
                                          mqtt=mqtt.found, catalog=catalog.digest, signals=catalog.signals),
    )
    return enrolment


class RunningAgent:
    """An agent's background tasks, from `start_agent` until `shutdown`."""

    def __init__(self, parts: AgentParts, tasks: list[asyncio.Task[None]]) -> None:
        self.parts = parts
        self.tasks = tasks

    async def until_stopped(self, stop: asyncio.Event) -> str | None:
        """Wait for `stop`, or for a background task to fail: then its name (the agent stops,
        and its service manager restarts it, rather than limp on without, say, its log shipper)."""
        crashed = asyncio.create_task(_first_failure(self.tasks))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([stopped, crashed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if crashed.done():
            return crashed.result()
        crashed.cancel()
        return None

    async def shutdown(self) -> None:
        """Stop supervising and close the link and the store; the apps keep running."""
        for task in self.tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self.tasks, timeout=5.0)  # a task that ignores its cancellation
        for task in stuck:                                       # must not keep the agent from exiting
            log.error("task_ignored_cancellation", task=task.get_name())
        await self.parts.agent.close()
        await self.parts.link.close()
        self.parts.store.close()


async def start_agent(parts: AgentParts,
                      also: Sequence[tuple[str, Coroutine[Any, Any, None]]] = ()) -> RunningAgent:
    """Local state first (apps re-adopted or restarted from SQLite, even with no network), then
    the link and everything that needs the bus, in the background (with `also`)."""
    await parts.agent.start()
    p = parts
    housekeeping_at = HOUSEKEEPING_S * (1 + p.phase)
    tasks = [asyncio.create_task(coro, name=name) for name, coro in [
        ("link", connect(p.settings, p.link, p.enrolment, p.middleware_known)), ("facts", p.facts.run()),
        ("logs", p.logs.run()), ("reported", p.reported.run()), ("heartbeat", p.heartbeat.run()),
        ("resync", p.watch.resync_forever()), ("signals", p.signals.run()),
        ("housekeeping", housekeeping(p.store, p.downloader, housekeeping_at)),
        *also,
    ]]
    return RunningAgent(parts, tasks)


async def serve(settings: AgentSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    structlog.contextvars.bind_contextvars(device_id=settings.device_id)
    databroker = Databroker(settings.databroker)
    runtimes: list[Runtime] = [NativeRuntime()]
    docker = await DockerRuntime.connect(settings.docker_host, owner=settings.device_id,
                                         base_image=settings.docker_base_image)
    if docker is not None:
        runtimes.append(docker)
    parts = build_agent(
        settings, runtimes=runtimes, databroker=databroker, agent_version=agent_version(),
        installer=Installer(settings.data_dir / "apps", key_list(settings.packager_public_key),
                            python=settings.app_python),
    )
    running = await start_agent(parts, also=[("middleware", watch_middleware(parts))])
    handle_signals(stop)
    await running.until_stopped(stop)
    log.info("agent_stopping")
    await running.shutdown()


def handle_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, dump_tasks)


async def watch_middleware(parts: AgentParts, interval_s: float = 30.0) -> None:
    """The databroker, its signal catalogue and the MQTT broker, looked for now and then."""
    while True:
        await asyncio.gather(parts.databroker.detect(), parts.mqtt.detect())
        await parts.catalog.refresh()
        parts.middleware_known.set()
        await asyncio.sleep(interval_s)


async def connect(settings: AgentSettings, link: NatsLink, enrolment: Enrolment | None,
                  middleware_known: asyncio.Event | None = None) -> None:
    """Enrol first when asked to and not enrolled yet (the apps already run meanwhile), then keep
    the link up and the credentials renewed over it."""
    if enrolment is None:
        await link.run()
        return
    creds = enrolment.stored_credentials()
    if creds is None and middleware_known is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(middleware_known.wait(), MIDDLEWARE_WAIT_S)
    creds = creds or await enrolment.until_accepted()
    link.creds = creds or settings.nats_creds
    async with asyncio.TaskGroup() as group:
        group.create_task(link.run())
        group.create_task(enrolment.keep_renewed(link))


async def _first_failure(tasks: list[asyncio.Task[None]]) -> str | None:
    """The name of the first background task to end by an error (None if they all just end)."""
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        with contextlib.suppress(asyncio.CancelledError):
            if task.exception() is not None:
                log.error("agent_task_failed", task=task.get_name(), error=repr(task.exception()))
                return task.get_name()
    return None


def dump_tasks() -> None:
    """`kill -USR2 <agent>`: every asyncio task and where it waits, on stderr (for a stuck agent)."""
    for task in asyncio.all_tasks():
        print(f"--- task {task.get_name()}", file=sys.stderr)
        try:
            task.print_stack(limit=8, file=sys.stderr)
        except Exception as e:  # e.g. a frame whose line number is None (linecache raises): go on
            print(f"    {task!r} (no stack: {e!r})", file=sys.stderr)
    sys.stderr.flush()


def desired_trace(agent: Agent, app: str) -> TraceContext:
    """The trace of the rollout that assigned `app` here (its desired entry's)."""
    desired = agent.desired_app(app)
    return desired.trace if desired is not None else TraceContext()

