"""The orchestrator with its peers on real servers, and a fleet of SIMULATED agents.

The packager, the registry and the orchestrator run in-process (`serve(settings, stop)`), each
in a PostgreSQL schema of its own, on one NATS server. A simulated agent is a nats-py client
that announces its device to the registry (pre-authorised with labels, so a selector finds
it), heartbeats (so the registry counts it online), watches its own key in KV `sdv_desired`,
and answers a desired version it has not answered yet with an `AppHealthy` or `AppFailed` fact —
an envelope on `sdv.evt.agent.<device>.<Type>` with a `Nats-Msg-Id`, as the real edge agent
publishes it; a document naming the version it already runs is answered at once with
`AppAlreadyCurrent`, an app taken out of its document with `AppUninstalled` (the contract of
the edge agent, issue 14). It installs nothing: what it does per version is scripted (`ok`,
`fail`, `silent`, or held until a gate opens). A document whose app carries an `Activation`
(gates, hold: issue 15) is answered as the agent does: `AppStaged`, then `ActivationDeferred`
(held, or the first gate with the simulated signal value in `signals`), and the answer only
once a newer document drops the hold and the gates hold (`open_gates` re-judges them). It records every desired document it saw, so tests can check that revisions only
increase and which versions a device was ever asked to run. Like the real agent, it acts only on
documents that verify with the orchestrator's public key (the suite creates the orchestrator's key
file before any orchestrator starts, so agents can pin it from the start); one that does not is
recorded in `untrusted` and fails the checks of `assert_clean_completion`.

Loaded by path (`load_harness()` in conftest) so tests/reliability can share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from sdv_client.packages import PackagerClient
from sdv_events import enrolment
from sdv_events.auth import Role, new_keypair
from sdv_events.bus import CommandClient
from sdv_events.codec import encode
from sdv_events.desired_signing import DesiredSigner, DesiredVerifier, UntrustedDesired
from sdv_events.envelope import Envelope
from sdv_events.gates import judge, parse_gates
from sdv_events.ids import stream_id
from sdv_events.key_files import load_or_create_ed25519
from sdv_events.provisioning import DESIRED_BUCKET, provision
from sdv_events.registry import default_registry
from sdv_events.schemas.agent import (
    ActivationDeferred,
    AppAlreadyCurrent,
    AppFact,
    AppFailed,
    AppHealthy,
    AppStaged,
    AppUninstalled,
)
from sdv_events.schemas.deployment import DesiredApp, DesiredState
from sdv_events.schemas.devices import (
    Capabilities,
    DeviceList,
    DeviceView,
    GetDevice,
    Kuksa,
    ListDevices,
    PreauthorizeDevice,
)
from sdv_events.schemas.heartbeat import DeviceMetrics, Heartbeat
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    CreateRolloutRequest,
    DevicesPlanned,
    DeviceSucceeded,
    DeviceTargeted,
    ListRollouts,
    PreviousPackages,
    RolloutCompleted,
    RolloutList,
    RolloutPlanned,
    RolloutRef,
    RolloutView,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
    WaveCompleted,
    WaveStarted,
)
from sdv_events.schemas.scheduling import Schedule
from sdv_events.service import Ping, ServiceHealth, wait_until_ready
from sdv_events.store import EventStore
from sdv_events.subjects import agent_fact_subject, heartbeat_subject
from sdv_orchestrator.app import serve as serve_orchestrator
from sdv_orchestrator.settings import OrchestratorSettings
from sdv_packager.app import serve as serve_packager
from sdv_packager.settings import PackagerSettings
from sdv_registry.app import serve as serve_registry
from sdv_registry.settings import RegistrySettings

APP_TOML = """\
[app]
name = "{name}"
version = "{version}"
entry_point = "main.py"
runtime = "{runtime}"
{vss}
"""
VSS = '[vss]\nreads = ["Vehicle.Speed"]\n'


def capabilities(**overrides: Any) -> Capabilities:
    # python_version as a real agent reports it (platform.python_version()): patch level included.
    base: dict[str, Any] = dict(hardware_type="linux-generic", arch="x86_64", runtimes=["native"],
                                python_version="3.11.9", agent_version="sim-0.1", memory_mb=4096,
                                storage_mb=32768, kuksa=Kuksa(present=True, vss_version="4.0"))
    return Capabilities(**(base | overrides))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0,
                     interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy or the deadline passes (then its last
    result, falsy, for the caller's assert to show)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str,
                interval: float = 0.1) -> Any:
    """Poll `check` until truthy; fail with `what` (and the last result) when `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {what} (last: {result!r})")
        await asyncio.sleep(interval)


def bodies(events: list[Any], kind: type) -> list[Any]:
    """The data of the events of one type, in order."""
    return [e.data for e in events if isinstance(e.data, kind)]


def plan_of(events: list[Any]) -> list[list[str]]:
    """The waves of a rollout's plan, from its `RolloutPlanned` header and `DevicesPlanned` chunks."""
    (header,) = bodies(events, RolloutPlanned)
    waves: list[list[str]] = [[] for _ in range(header.waves)]
    for chunk in bodies(events, DevicesPlanned):
        for device in chunk.devices:
            waves[device.wave].append(device.device_id)
    return waves


def previous_of(events: list[Any]) -> dict[str, PackageInfo | None]:
    """Device → the package its plan recorded it ran before the rollout (None: not installed)."""
    table = [p for chunk in bodies(events, PreviousPackages) for p in chunk.packages]
    return {d.device_id: None if d.previous is None else table[d.previous]
            for chunk in bodies(events, DevicesPlanned) for d in chunk.devices}


# --- services -------------------------------------------------------------------------------------


@dataclass
class Running:
    """One in-process service: its task and the event that stops it."""

    name: str
    task: asyncio.Task[None]
    stop_event: asyncio.Event

    async def stop(self, timeout: float = 20.0) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, timeout)


async def start_service(name: str, serve: Callable[..., Awaitable[None]], settings: Any,
                        nc: NatsClient) -> Running:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop), name=f"service:{name}")
    await wait_until_ready(nc, name, task=task)
    return Running(name, task, stop)


@dataclass
class Suite:
    """Packager + registry + orchestrator(s) on one NATS server and one PostgreSQL."""

    url: str
    database_url: str
    schema: str
    tmp_path: Path
    nc: NatsClient = None  # type: ignore[assignment]
    packager: Running | None = None
    registry: Running | None = None
    orchestrators: list[Running] = field(default_factory=list)
    packages: PackagerClient = None  # type: ignore[assignment]
    commands: CommandClient = None  # type: ignore[assignment]
    tick_s: float = 0.2
    heartbeat_silence_s: float = 3600.0  # the registry's: how long without a heartbeat is offline
    clock_skew_s: float = 0.5  # the orchestrator's
    reconnect_grace_s: float = 1.0
    # Simulated agents heartbeat (the registry counts them online); off for tests that send
    # heartbeats of their own (the monitor's), whose devices then count offline.
    heartbeats: bool = True
    agents: dict[str, SimAgent] = field(default_factory=dict)
    wheelhouse: Path | None = None  # the packager's, offline (no index is asked)
    _apps: int = 0
    eventually = staticmethod(eventually)
    plan_of = staticmethod(plan_of)
    previous_of = staticmethod(previous_of)

    @property
    def orchestrator_schema(self) -> str:
        return f"{self.schema}_o"

    @property
    def orchestrator_key_path(self) -> Path:
        return self.tmp_path / "keys" / "orchestrator-ed25519.pem"

    @property
    def verifier(self) -> DesiredVerifier:
        """What an agent pins: the orchestrator's public key (its key file is made on `open`, as
        an installation provisions it; every orchestrator of the suite signs with it)."""
        return DesiredSigner(load_or_create_ed25519(self.orchestrator_key_path)).verifier()

    async def open(self, orchestrator: bool = True) -> Suite:
        load_or_create_ed25519(self.orchestrator_key_path)
        self.nc = await nats.connect(self.url)
        await provision(self.nc.jetstream())
        self.packages = PackagerClient(self.nc, actor="test")
        self.commands = CommandClient(self.nc, actor="operator:test", timeout=30.0)
        self.packager = await start_service("packager", serve_packager, PackagerSettings(
            service="packager", nats_url=self.url, database_url=self.database_url,
            schema_name=f"{self.schema}_p", signing_key_path=self.tmp_path / "keys" / "packager.pem",
            wheelhouse=self.wheelhouse, wheels_offline=True, log_level="WARNING",
        ), self.nc)
        # No trust file: devices are admitted but get no NATS credentials (a plain NATS server).
        self.registry = await start_service("registry", serve_registry, RegistrySettings(
            service="registry", nats_url=self.url, database_url=self.database_url,
            schema_name=f"{self.schema}_r", log_level="WARNING",
            heartbeat_silence_s=self.heartbeat_silence_s,
        ), self.nc)
        if orchestrator:
            await self.start_orchestrator()
        return self

    def orchestrator_settings(self) -> OrchestratorSettings:
        # Skew tolerance and reconnect grace kept short: every test on one machine, one clock.
        return OrchestratorSettings(
            service="orchestrator", nats_url=self.url, database_url=self.database_url,
            schema_name=self.orchestrator_schema, log_level="WARNING", tick_s=self.tick_s,
            signing_key_path=self.orchestrator_key_path, clock_skew_s=self.clock_skew_s,
            reconnect_grace_s=self.reconnect_grace_s,
        )

    async def start_orchestrator(self) -> Running:
        running = await start_service("orchestrator", serve_orchestrator, self.orchestrator_settings(),
                                      self.nc)
        self.orchestrators.append(running)
        return running

    async def stop_orchestrator(self, running: Running) -> None:
        self.orchestrators.remove(running)
        await running.stop()

    async def close(self) -> None:
        for agent in list(self.agents.values()):
            await agent.close()
        for running in [*self.orchestrators, self.registry, self.packager]:
            if running is not None:
                with contextlib.suppress(Exception):
                    await running.stop()
        if self.nc is not None:
            await self.nc.drain()

    # --- packages --------------------------------------------------------------------------------

    async def publish(self, name: str, version: str, *, runtime: str = "native",
                      vss: bool = False) -> PackageInfo:
        self._apps += 1
        app = self.tmp_path / "apps" / f"{name}-{version}-{self._apps}"
        app.mkdir(parents=True)
        (app / "sdv-app.toml").write_text(
            APP_TOML.format(name=name, version=version, runtime=runtime, vss=VSS if vss else ""))
        (app / "main.py").write_text(f"print('{name} {version}')\n")
        return await self.packages.publish_dir(app)

    # --- devices ---------------------------------------------------------------------------------

    async def add_agents(self, count: int, *, prefix: str = "sim", labels: dict[str, str] | None = None,
                         start: int = 0, **caps: Any) -> list[SimAgent]:
        """`count` simulated agents `<prefix>-00…`, pre-authorised with `labels`, announced,
        accepted, heartbeating and watching their desired state; returns once the registry
        lists them online."""
        labels = labels or {"fleet": "sim"}
        verifier = self.verifier
        agents = [SimAgent(f"{prefix}-{i:02d}", self.url, capabilities(**caps), verifier,
                           heartbeat_s=0.5 if self.heartbeats else 0.0)
                  for i in range(start, start + count)]
        for agent in agents:
            await self.commands.call("registry", "preauthorize",
                                     PreauthorizeDevice(agent.device_id, agent.token, labels),
                                     DeviceView)
        await asyncio.gather(*(agent.start() for agent in agents))
        for agent in agents:
            self.agents[agent.device_id] = agent
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        ids = {a.device_id for a in agents}

        async def listed() -> bool:
            page = await self.commands.call("registry", "list", ListDevices(
                selector=selector, status="accepted", online=True if self.heartbeats else None,
                limit=10_000), DeviceList)
            return ids <= {d.device_id for d in page.devices}

        assert await eventually(listed), "the registry never listed the announced devices online"
        return agents

    async def wait_presence(self, device_ids: list[str], online: bool, timeout: float = 20.0) -> None:
        """Until the registry shows every one of these devices online (or offline)."""
        async def shown() -> bool:
            views = [await self.commands.call("registry", "get", GetDevice(d), DeviceView)
                     for d in device_ids]
            return all(v.online == online for v in views)

        await until(shown, timeout, f"the registry to show {device_ids} online={online}")

    # --- rollouts --------------------------------------------------------------------------------

    async def create(self, package: PackageInfo, *, selector: str | None = None,
                     device_ids: list[str] | None = None, waves: list[str] | None = None,
                     kind: str = "canary", batch_size: int = 10, success: float = 0.95,
                     error: float = 0.05, device_s: float = 20.0, soak_s: float = 0.0,
                     start: bool = True, rollout_id: str | None = None,
                     offline: str = "skip", schedule: Schedule | None = None) -> RolloutView:
        strategy = Strategy(kind=kind, waves=waves or ["1", "10%", "50%", "100%"],  # type: ignore[arg-type]
                            batch_size=batch_size)
        request = CreateRolloutRequest(
            package=package.name, version=package.version,
            target=Target(selector=selector, device_ids=device_ids), strategy=strategy,
            thresholds=Thresholds(success, error), timeouts=Timeouts(device_s, soak_s), start=start,
            rollout_id=rollout_id or f"r-{uuid.uuid4().hex[:12]}",
            offline=offline,  # type: ignore[arg-type]
            schedule=schedule or Schedule(),
        )
        return await self.commands.call("orchestrator", "create", request, RolloutView)

    async def op(self, name: str, rollout_id: str, reason: str = "") -> RolloutView:
        return await self.commands.call("orchestrator", name, RolloutRef(rollout_id, reason), RolloutView)

    async def get(self, rollout_id: str) -> RolloutView:
        return await self.op("get", rollout_id)

    async def wait_status(self, rollout_id: str, *statuses: str, timeout: float = 15.0) -> RolloutView:
        async def reached() -> RolloutView | None:
            view = await self.get(rollout_id)
            return view if view.status in statuses else None

        view = await eventually(reached, timeout, interval=0.1)
        assert view is not None, f"rollout never reached {statuses}: {await self.get(rollout_id)}"
        return view

    async def desired(self, device_id: str) -> DesiredState | None:
        """The device's document, verified as an agent verifies it (UntrustedDesired otherwise)."""
        kv = await self.nc.jetstream().key_value(DESIRED_BUCKET)
        try:
            entry = await kv.get(device_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        return self.verifier.open(entry.value or b"", device_id=device_id)

    async def without_desired(self, device_ids: list[str]) -> bool:
        """True when none of these devices has a desired-state document."""
        return all([await self.desired(d) is None for d in device_ids])

    async def events(self, rollout_id: str) -> list[Envelope]:
        """The rollout's stream as the orchestrator stored it."""
        store = await EventStore.open(self.database_url, self.orchestrator_schema)
        try:
            return list(await store.read_stream(stream_id("rollout", rollout_id)))
        finally:
            await store.close()

    async def assert_clean_completion(self, rollout_id: str, devices: list[str], digest: str,
                                      app: str, timeout: float = 20.0) -> None:
        """Completed exactly once, each device targeted and counted once, in the stream, the view,
        the catalog, the desired documents and what the agents saw."""
        done = await self.wait_status(rollout_id, "completed", "rolled_back", "aborted", timeout=timeout)
        assert done.status == "completed", done.reason
        assert sum(w.succeeded for w in done.waves) == len(devices)
        assert sum(w.failed for w in done.waves) == 0
        events = await self.events(rollout_id)
        data = [e.data for e in events]
        targeted = Counter(d.device_id for d in data if isinstance(d, DeviceTargeted))
        succeeded = Counter(d.device_id for d in data if isinstance(d, DeviceSucceeded))
        assert targeted == succeeded == Counter(devices)
        waves = len(done.waves)
        assert [d.wave for d in data if isinstance(d, WaveStarted)] == list(range(waves))
        assert [d.wave for d in data if isinstance(d, WaveCompleted)] == list(range(waves))
        assert [type(d) for d in data].count(RolloutCompleted) == 1
        assert [e.version for e in events] == list(range(1, len(events) + 1))

        async def catalog_settled() -> Any:
            rows = (await self.commands.call("orchestrator", "list", ListRollouts(), RolloutList)).rollouts
            row = next(r for r in rows if r.rollout_id == rollout_id)
            return row if row.status == "completed" else None

        row = await self.eventually(catalog_settled)
        assert (row.devices, row.succeeded, row.failed) == (len(devices), len(devices), 0)
        for device_id in devices:
            agent = self.agents[device_id]
            assert agent.untrusted == [], agent.untrusted
            assert await self.eventually(lambda a=agent: _true(a.running.get(app) == done.version))
            doc = await self.desired(device_id)
            assert (doc.apps[app].package.digest, doc.apps[app].rollout_id) == (digest, rollout_id)
            assert agent.revisions == sorted(set(agent.revisions)), agent.revisions
            # A document re-written after a restart carries a revision the agent already had and
            # is ignored; it must be the very document of that revision, never an older state.
            by_revision = {d.revision: d for d in agent.docs}
            assert all(by_revision.get(d.revision) == d for d in agent.stale), agent.device_id


async def _true(value: bool) -> bool:
        return value


async def _true(value: bool) -> bool:
    return value


class OrchestratorProcess:
    """The orchestrator as a real process (`python -m sdv_orchestrator`) of the suite, to kill."""

    def __init__(self, suite: Suite, log: Path, env: dict[str, str] | None = None) -> None:
        self.suite = suite
        self.log = log
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = os.environ | {
            "SDV_NATS_URL": self.suite.url, "SDV_DATABASE_URL": self.suite.database_url,
            "SDV_ORCHESTRATOR_SCHEMA": self.suite.orchestrator_schema, "SDV_LOG_LEVEL": "WARNING",
            "SDV_ORCHESTRATOR_SIGNING_KEY": str(self.suite.orchestrator_key_path),
        } | self.env
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sdv_orchestrator", env=env, stdout=out,
                stderr=asyncio.subprocess.STDOUT)
        pings = CommandClient(self.suite.nc, timeout=1.0)
        for _ in range(200):
            try:
                await pings.call("orchestrator", "ping", Ping(), ServiceHealth)
                return
            except Exception:
                assert self.proc.returncode is None, self.log.read_text()[-3000:]
                await asyncio.sleep(0.1)
        raise TimeoutError("orchestrator process did not answer ping")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)

    async def terminate(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                await self.kill()


@contextlib.asynccontextmanager
async def running_suite(url: str, database_url: str, schema: str, tmp_path: Path,
                        tick_s: float = 0.2, orchestrator: bool = True,
                        heartbeat_silence_s: float = 3600.0,
                        wheelhouse: Path | None = None,
                        heartbeats: bool = True) -> AsyncIterator[Suite]:
    suite = Suite(url, database_url, schema, tmp_path, tick_s=tick_s,
                  heartbeat_silence_s=heartbeat_silence_s, wheelhouse=wheelhouse,
                  heartbeats=heartbeats)
    try:
        yield await suite.open(orchestrator)
    finally:
        await suite.close()


# --- simulated agents -----------------------------------------------------------------------------


@dataclass
class SimAgent:
    """A SIMULATED edge agent: announce, watch own desired key, answer with facts (no install).

    `script[version]`: what to answer for that version: "ok" (AppHealthy), "fail" (AppFailed),
    "silent" (never answers). `gate`, when set, holds every answer until it opens; `delay_s`
    spreads answers out in time."""

    device_id: str
    url: str
    caps: Capabilities
    verifier: DesiredVerifier  # the orchestrator's public key, as an agent pins it
    default: str = "ok"
    script: dict[str, str] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    delay_s: tuple[float, float] = (0.0, 0.0)  # answer after a random delay in this range
    token: str = field(default_factory=lambda: f"tok-{uuid.uuid4().hex}")
    docs: list[DesiredState] = field(default_factory=list)  # every document seen, in order
    stale: list[DesiredState] = field(default_factory=list)  # documents seen that were not newer
    untrusted: list[str] = field(default_factory=list)  # documents refused: cause and reason
    running: dict[str, str] = field(default_factory=dict)  # app → version it would run now
    # app → (digest, rollout id) it runs (once answered healthy or already current)
    current: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    facts: list[tuple[str, str, str | None]] = field(default_factory=list)  # (type, version, rollout)
    heartbeat_s: float = 0.5  # 0: no heartbeats (the registry never counts it online)
    # Simulated vehicle signals the gates are judged against (absent: no value yet).
    signals: dict[str, object] = field(default_factory=dict)
    # (digest, rollout) → the staged app and its document's revision, waiting to switch.
    staged: dict[tuple[str, str | None], tuple[DesiredApp, int]] = field(default_factory=dict)
    _beating: asyncio.Task[None] | None = None
    _answered: set[tuple[str, str | None]] = field(default_factory=set)
    _nc: NatsClient | None = None
    _task: asyncio.Task[None] | None = None
    _answering: set[asyncio.Task[None]] = field(default_factory=set)
    _fact_version: int = 0
    _revision: int = 0
    _last_deferral: dict[tuple[str, str | None], str] = field(default_factory=dict)

    async def start(self) -> None:
        self._nc = await nats.connect(self.url)
        key = new_keypair(Role.USER)
        answer = await enrolment.announce(self._nc, key, self.device_id, self.caps,
                                          token=self.token, timeout=10)
        assert answer.status == "accepted", answer
        # A registry without a trust file admits devices but mints no NATS credentials.
        assert answer.credentials is None, answer
        self._beat()
        await self._watch_desired()

    def _beat(self) -> None:
        if self.heartbeat_s > 0:
            self._beating = asyncio.create_task(self._heartbeats(), name=f"sim-hb:{self.device_id}")

    async def _heartbeats(self) -> None:
        seq = 0
        while self._nc is not None:
            seq += 1
            beat = Heartbeat(device_id=self.device_id, seq=seq, sent_at=datetime.now(UTC),
                             agent_version="sim-0.1", desired_revision=self._revision, apps={},
                             device=DeviceMetrics(cpu_pct=1.0, mem_pct=10.0, mem_used_bytes=1,
                                                  mem_total_bytes=10, disk_pct=1.0,
                                                  disk_free_bytes=1))
            with contextlib.suppress(Exception):
                await self._nc.publish(heartbeat_subject(self.device_id), encode(beat))
            await asyncio.sleep(self.heartbeat_s)

    async def _watch_desired(self) -> None:
        assert self._nc is not None
        kv = await self._nc.jetstream().key_value(DESIRED_BUCKET)
        watcher = await kv.watch(self.device_id)
        self._task = asyncio.create_task(self._watch(watcher), name=f"sim-agent:{self.device_id}")

    async def go_offline(self) -> None:
        """Disconnect: no watch, no facts, until `come_online`."""
        await self.close()
        self._nc, self._task = None, None

    async def come_online(self) -> None:
        """Reconnect, heartbeat and watch again: the watch delivers the key's newest document
        first."""
        self._nc = await nats.connect(self.url)
        self._beat()
        await self._watch_desired()

    def versions_seen(self, app: str) -> list[str]:
        return [d.apps[app].package.version for d in self.docs if app in d.apps]

    @property
    def revisions(self) -> list[int]:
        return [d.revision for d in self.docs]

    async def _watch(self, watcher: Any) -> None:
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=3600)
                except nats.errors.TimeoutError:
                    continue
                if entry is None or not entry.value:
                    continue
                try:  # replays (older revisions) are kept in `stale`: the agent's own check is tested elsewhere
                    doc = self.verifier.open(entry.value, device_id=self.device_id)
                except UntrustedDesired as refused:
                    self.untrusted.append(f"{refused.cause}: {refused}")
                    continue
                if doc.revision <= self._revision:
                    self.stale.append(doc)  # level-triggered: not newer, ignored
                    continue
                self._revision = doc.revision
                self.docs.append(doc)
                self.running = {name: app.package.version for name, app in doc.apps.items()}
                for name in set(self.current) - set(doc.apps):
                    digest, rollout_id = self.current.pop(name)
                    self._spawn(self._uninstalled(name, digest, rollout_id, doc.revision))
                for app in doc.apps.values():
                    key = (app.package.digest, app.rollout_id)
                    if key in self.staged:  # a newer document: its hold may be gone
                        self.staged[key] = (app, doc.revision)
                        self._spawn(self._activate(key))
                    elif key not in self._answered:
                        self._answered.add(key)
                        self._spawn(self._answer(app, doc.revision))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def _deferral(self, app: DesiredApp, revision: int) -> ActivationDeferred | None:
        """Why the app may not switch now (None: it may), as the agent reports it."""
        activation = app.activation
        if activation is None:
            return None
        common = self._common(app.package, app.rollout_id, revision)
        if activation.hold:
            return ActivationDeferred(**common, reason="held until `sdv rollout activate`",
                                      held=True)
        verdict = judge(parse_gates(activation.gates), self.signals)
        if verdict.holds:
            return None
        return ActivationDeferred(**common, reason=verdict.reason, gate=verdict.gate,
                                  signal=verdict.signal, value=verdict.value)

    def _common(self, package: PackageInfo, rollout_id: str | None, revision: int) -> dict[str, Any]:
        return dict(device_id=self.device_id, app=package.name, version=package.version,
                    digest=package.digest, desired_revision=revision, rollout_id=rollout_id)

    async def _activate(self, key: tuple[str, str | None]) -> None:
        """Re-judge a staged app (a newer document, or new signal values): switch, or say why not
        when the reason changed."""
        found = self.staged.get(key)
        if found is None:  # switched meanwhile
            return
        app, revision = found
        deferral = self._deferral(app, revision)
        if deferral is None:
            self.staged.pop(key, None)
            await self._answer(app, revision, staged=True)
        elif deferral.reason != self._last_deferral.get(key):
            self._last_deferral[key] = deferral.reason
            await self.publish(deferral)

    async def open_gates(self, **signals: object) -> None:
        """New signal values (`Vehicle_Speed=0` for Vehicle.Speed): staged apps are judged again."""
        self.signals.update({k.replace("_", "."): v for k, v in signals.items()})
        for key in list(self.staged):
            await self._activate(key)

    async def _answer(self, app: DesiredApp, revision: int, *, staged: bool = False) -> None:
        package, rollout_id = app.package, app.rollout_id
        common = self._common(package, rollout_id, revision)
        ran = self.current.get(package.name)
        if ran is not None and ran[0] == package.digest:  # nothing to do: say so at once
            self.current[package.name] = (package.digest, rollout_id)
            await self.publish(AppAlreadyCurrent(**common))
            return
        what = self.script.get(package.version, self.default)
        if what == "silent":
            return
        if not staged and app.activation is not None:  # downloaded and verified: wait to switch
            await self.publish(AppStaged(**common))
            self.staged[(package.digest, rollout_id)] = (app, revision)
            await self._activate((package.digest, rollout_id))
            return
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s[1] > 0:
            await asyncio.sleep(random.uniform(*self.delay_s))
        fact: AppFact = (AppHealthy(**common) if what == "ok"
                         else AppFailed(**common, reason="simulated failure", stage="health"))
        if what == "ok":
            self.current[package.name] = (package.digest, rollout_id)
        await self.publish(fact)

    async def _uninstalled(self, app: str, digest: str, rollout_id: str | None,
                           revision: int) -> None:
        version = next((d.apps[app].package.version for d in reversed(self.docs) if app in d.apps
                        and d.apps[app].package.digest == digest), "")
        await self.publish(AppUninstalled(device_id=self.device_id, app=app, version=version,
                                          digest=digest, desired_revision=revision,
                                          rollout_id=rollout_id))

    async def publish(self, fact: AppFact) -> None:
        assert self._nc is not None
        type_name, schema_version = default_registry.describe(fact)
        self._fact_version += 1
        msg_id = f"{self.device_id}.{fact.app}.{fact.digest[:16]}.{fact.desired_revision}.{type_name}"
        if isinstance(fact, ActivationDeferred):  # a new reason is a new fact
            msg_id += f".{uuid.uuid5(uuid.NAMESPACE_URL, fact.reason).hex[:12]}"
        envelope = Envelope(
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, msg_id), stream_id=stream_id("agent", self.device_id),
            version=self._fact_version, type=type_name, schema_version=schema_version,
            occurred_at=datetime.now(UTC), data=fact, actor=f"agent:{self.device_id}",
            correlation_id=fact.rollout_id,
        )
        await self._nc.jetstream().publish(agent_fact_subject(self.device_id, type_name),
                                           encode(envelope), headers={"Nats-Msg-Id": msg_id})
        self.facts.append((type_name.split(".")[1], fact.version, fact.rollout_id))

    async def close(self) -> None:
        for task in [*self._answering, *(t for t in (self._task, self._beating) if t)]:
            task.cancel()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
