"""Rollouts end to end with REAL edge agents (issue 6: "real agents — simulated agents allowed for
counts > 20").

Everything is real: one NATS server of the test's own, PostgreSQL, the packager, registry and
orchestrator in-process (tests/integration/orchestrator/fleet_harness.py, loaded by path), and
each device is a real `python -m sdv_edge_agent` process with its own data directory that
downloads the signed package from the object store, verifies it against the packager's key,
builds a venv and runs the app as a process of its own. The registry runs without a trust file
(plain NATS, no per-device credentials), so the agents run without `--enrol`: the test registers
their device ids the way the harness registers simulated agents (PreauthorizeDevice + Announce
with capabilities), so the orchestrator's planning finds them by selector.

What "the device runs version X" means here, checked from four independent places: the desired
document in KV `sdv_desired`; the agent's own ReportedState in KV `sdv_reported` (RUNNING,
healthy, that version and digest); the reported pid is a live process started from that agent's
data directory, whose environment says that version; and the app's own console line, which
carries its version and pid, arrived on `sdv.logs.<device>.<app>.stdout`.

Every wait is bounded; every agent and app process is killed at the end and the process list is
checked for leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import psutil
import pytest
from nats.aio.msg import Msg

from sdv_events import enrolment
from sdv_events.auth import Role, new_keypair
from sdv_events.codec import decode_envelope
from sdv_events.envelope import Envelope
from sdv_events.provisioning import REPORTED_BUCKET
from sdv_events.schemas.deployment import GetPublicKey, ReportedApp, ReportedState
from sdv_events.schemas.devices import (
    DeviceList,
    DeviceView,
    Kuksa,
    ListDevices,
    PreauthorizeDevice,
)
from sdv_events.schemas.packages import PackageInfo, SigningKey
from sdv_events.schemas.rollouts import (
    DeviceFailed,
    DeviceSucceeded,
    DeviceTargeted,
    RollbackStarted,
    WaveStarted,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

APP = "canary-app"
AGENT_COUNT = 20
LABELS = {"fleet": "real"}
SELECTOR = "fleet=real"


fleet_harness = sys.modules["sdv_orchestrator_fleet_harness"]  # loaded by conftest.py
agent_harness = sys.modules["sdv_agent_test_harness"]
until, bodies = fleet_harness.until, fleet_harness.bodies

# The harness's sdv-app.toml has no [health]: the default alive_for_s (5 s) would make every
# wave wait 5 s. A real app that stays alive, healthy after 1 s.
APP_TOML = """\
[app]
name = "{name}"
version = "{version}"
entry_point = "main.py"
runtime = "native"

[health]
alive_for_s = 1
"""

# Prints its version and pid (so a console line proves which process runs which version), then
# stays alive until SIGTERM (Python's default action: exit at once).
STAYS_ALIVE = """\
import os, time
print("{tag}", os.getpid(), flush=True)
time.sleep(3600)
"""

# Exits at once — before its 1 s health window ends — on the devices named in it; stays alive
# elsewhere. The same signed package for every device: a build that breaks on some vehicles.
CRASHES_ON = """\
import os, sys, time
if os.environ["SDV_DEVICE_ID"] in {devices!r}:
    print("{tag} crashing", os.getpid(), flush=True)
    sys.exit(3)
print("{tag}", os.getpid(), flush=True)
time.sleep(3600)
"""




@dataclass
class RealFleet:
    """The cloud side of a fleet of real agent processes: registration, what the bus saw
    (heartbeats, facts, console lines), reported states, process checks."""

    suite: Any
    root: Path
    public_key: str
    orchestrator_key: str
    agents: dict[str, Any] = field(default_factory=dict)  # device id → agent_harness.AgentProc
    heartbeats: dict[str, float] = field(default_factory=dict)  # device id → first heartbeat (monotonic)
    started_at: float = 0.0  # when the agent processes were spawned (monotonic)
    facts: list[Envelope] = field(default_factory=list)
    lines: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # subject → lines
    _subs: list[Any] = field(default_factory=list)

    async def open(self) -> RealFleet:
        nc = self.suite.nc
        self._subs = [await nc.subscribe("sdv.hb.*", cb=self._on_heartbeat),
                      await nc.subscribe("sdv.evt.agent.>", cb=self._on_fact),
                      await nc.subscribe("sdv.logs.>", cb=self._on_line)]
        return self

    async def _on_heartbeat(self, msg: Msg) -> None:
        self.heartbeats.setdefault(msg.subject.split(".")[2], time.monotonic())

    async def _on_fact(self, msg: Msg) -> None:
        self.facts.append(decode_envelope(msg.data))

    async def _on_line(self, msg: Msg) -> None:
        self.lines[msg.subject].append(msg.data.decode(errors="replace"))

    # --- agents ------------------------------------------------------------------------------

    def start_agents(self, device_ids: list[str]) -> None:
        """One real agent process per device id, each with its own data directory (no --enrol:
        the registry issues no credentials on this plain NATS server)."""
        self.started_at = time.monotonic()
        for device_id in device_ids:
            agent = agent_harness.AgentProc(
                device_id, self.root / device_id, self.suite.url, self.public_key, self.orchestrator_key,
                {"SDV_AGENT_HEARTBEAT_S": "1", "SDV_LOG_LEVEL": "INFO"})
            self.agents[device_id] = agent
            agent.start()

    async def register(self, device_ids: list[str]) -> None:
        """Pre-authorise with labels and announce each device id with the capabilities a real
        agent on this machine reports — the harness's path for simulated agents — then wait
        until the registry lists them as accepted."""
        caps = fleet_harness.capabilities(python_version=platform.python_version(),
                                          agent_version="sdv-edge-agent", kuksa=Kuksa(present=False))

        async def one(device_id: str) -> None:
            token = f"tok-{uuid.uuid4().hex}"
            await self.suite.commands.call("registry", "preauthorize",
                                           PreauthorizeDevice(device_id, token, LABELS), DeviceView)
            answer = await enrolment.announce(self.suite.nc, new_keypair(Role.USER), device_id, caps,
                                              token=token, timeout=10)
            assert answer.status == "accepted", answer

        await asyncio.gather(*(one(d) for d in device_ids))

        async def listed() -> bool:
            page = await self.suite.commands.call("registry", "list", ListDevices(
                selector=SELECTOR, status="accepted", limit=10_000), DeviceList)
            return set(device_ids) <= {d.device_id for d in page.devices}

        await until(listed, 15, "the registry lists the devices")

    async def wait_ready(self, device_ids: list[str], timeout: float) -> None:
        """Every agent process is up and connected: it sent a heartbeat."""
        async def ready() -> bool:
            dead = {d: a.process.returncode for d, a in self.agents.items() if a.process.poll() is not None}
            assert not dead, f"agents exited: {dead}\n{self.agents[next(iter(dead))].log()[-3000:]}"
            return set(device_ids) <= self.heartbeats.keys()

        await until(ready, timeout, f"heartbeats from all agents (missing "
                                    f"{sorted(set(device_ids) - self.heartbeats.keys())})")

    def boot_times(self) -> str:
        """Spawn → first heartbeat, fastest and slowest agent."""
        times = sorted(t - self.started_at for t in self.heartbeats.values())
        return f"{times[0]:.1f}-{times[-1]:.1f}s" if times else "-"

    def close(self) -> list[str]:
        """SIGTERM every agent at once, SIGKILL what is left after 10 s, then kill the apps (they
        outlive their agents by design). Returns the processes still found under the fleet's
        directory afterwards (must be none)."""
        for agent in self.agents.values():
            if agent.process is not None and agent.process.poll() is None:
                agent.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for agent in self.agents.values():
            if agent.process is None:
                continue
            try:
                agent.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait(5)
        agent_harness.kill_processes_under(self.root)
        return leftovers(self.root)

    # --- observing -----------------------------------------------------------------------------

    async def reported(self, device_id: str) -> ReportedState | None:
        js = self.suite.nc.jetstream()
        try:
            raw = await js.get_last_msg(f"KV_{REPORTED_BUCKET}", f"$KV.{REPORTED_BUCKET}.{device_id}",
                                        direct=True)
        except nats.js.errors.NotFoundError:
            return None
        return msgspec.json.decode(raw.data, type=ReportedState)

    async def running(self, device_id: str, package: PackageInfo) -> ReportedApp | None:
        """The agent reports `package` RUNNING and healthy (else None)."""
        state = await self.reported(device_id)
        app = state.apps.get(APP) if state else None
        ok = (app is not None and app.state == "RUNNING" and app.healthy
              and (app.version, app.digest) == (package.version, package.digest) and app.pid is not None)
        return app if ok else None

    async def all_running(self, device_ids: list[str], package: PackageInfo,
                          timeout: float) -> dict[str, ReportedApp]:
        async def check() -> dict[str, ReportedApp] | None:
            found = {d: await self.running(d, package) for d in device_ids}
            return found if all(found.values()) else None  # type: ignore[return-value]

        async def describe() -> dict[str, Any]:
            missing = {}
            for d in device_ids:
                if not await self.running(d, package):
                    state = await self.reported(d)
                    missing[d] = state.apps.get(APP) if state else None
            return missing

        try:
            return await until(check, timeout, f"{package.version} running on every device")  # type: ignore[no-any-return]
        except AssertionError as err:
            raise AssertionError(f"{err}; not running it: {await describe()}") from None

    def console(self, device_id: str) -> list[str]:
        return self.lines.get(f"sdv.logs.{device_id}.{APP}.stdout", [])

    def fact_types(self, device_id: str, version: str) -> list[str]:
        return [f.type.split(".")[1] for f in self.facts
                if f.data.device_id == device_id and getattr(f.data, "app", None) == APP
                and f.data.version == version]

    async def assert_really_runs(self, device_id: str, app: ReportedApp, tag: str) -> None:
        """The reported pid is alive, the only app process of that agent, started from its data
        directory with that version in its environment, and its console line reached the bus."""
        data_dir = self.agents[device_id].data_dir
        procs = agent_harness.processes_under(data_dir)
        assert [p.pid for p in procs] == [app.pid], (device_id, app, [p.cmdline() for p in procs])
        proc = psutil.Process(app.pid)
        assert proc.is_running()
        assert proc.status() != psutil.STATUS_ZOMBIE
        assert proc.environ().get("SDV_APP_VERSION") == app.version, proc.environ()
        assert proc.environ().get("SDV_DEVICE_ID") == device_id
        line = f"{tag} {app.pid}"

        async def printed() -> bool:
            return line in self.console(device_id)

        await until(printed, 10, f"console line {line!r} from {device_id} "
                                 f"(got {self.console(device_id)})")


def leftovers(root: Path) -> list[str]:
    """Processes whose command line or working directory lies under `root`."""
    found = []
    marker = str(root)
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(proc.info["cmdline"] or []) or (proc.info["cwd"] or "").startswith(marker):
                found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])}")
    return found




@pytest.fixture
async def fleet(suite: Any, tmp_path: Path) -> AsyncIterator[RealFleet]:
    key = await suite.packages.signing_key()
    # What an operator configures agents with: the orchestrator's key, asked from the orchestrator.
    orchestrator = await suite.commands.call("orchestrator", "public_key", GetPublicKey(), SigningKey)
    fleet = await RealFleet(suite, tmp_path / "agents", key.public_key_b64,
                            orchestrator.public_key_b64).open()
    try:
        yield fleet
    finally:
        left = fleet.close()
        assert not left, f"processes left behind: {left}"


async def publish(suite: Any, version: str, main: str) -> PackageInfo:
    """A real app directory built, signed and stored by the real packager."""
    app = suite.tmp_path / "apps" / f"{APP}-{version}"
    app.mkdir(parents=True)
    (app / "sdv-app.toml").write_text(APP_TOML.format(name=APP, version=version))
    (app / "main.py").write_text(main)
    info: PackageInfo = await suite.packages.publish_dir(app)
    assert info.health.alive_for_s == 1
    return info




async def roll_out_everywhere(suite: Any, fleet: RealFleet, package: PackageInfo, devices: list[str],
                              tag: str) -> dict[str, ReportedApp]:
    """All-at-once rollout of `package` to the selector; returns each device's reported app."""
    view = await suite.create(package, selector=SELECTOR, kind="all-at-once", device_s=45.0)
    done = await suite.wait_status(view.rollout_id, "completed", "rolled_back", "aborted", timeout=60)
    assert done.status == "completed", done.reason
    assert (done.waves[0].succeeded, done.waves[0].failed) == (len(devices), 0)
    reported = await fleet.all_running(devices, package, timeout=15)
    for device_id, app in reported.items():
        await fleet.assert_really_runs(device_id, app, tag)
    return reported


async def test_canary_to_20_real_agents_all_succeed(suite: Any, fleet: RealFleet) -> None:
    began = time.monotonic()
    devices = [f"car-{i:02d}" for i in range(AGENT_COUNT)]
    fleet.start_agents(devices)  # they boot (≈1 s of CPU each) while the cloud side is prepared
    await fleet.register(devices)
    v1 = await publish(suite, "1.0.0", STAYS_ALIVE.format(tag="v1"))
    v2 = await publish(suite, "2.0.0", STAYS_ALIVE.format(tag="v2"))
    await fleet.wait_ready(devices, timeout=45)
    ready = time.monotonic()

    # Every device runs v1 first, so the canary is a real upgrade of a running app.
    before = await roll_out_everywhere(suite, fleet, v1, devices, "v1")
    on_v1 = time.monotonic()

    view = await suite.create(v2, selector=SELECTOR, waves=["1", "25%", "100%"], device_s=30.0)
    assert view.status == "running"
    assert [w.size for w in view.waves] == [1, 4, 15]
    done = await suite.wait_status(view.rollout_id, "completed", "rolled_back", "aborted", timeout=60)
    on_v2 = time.monotonic()
    assert done.status == "completed", done.reason
    assert [(w.succeeded, w.failed, w.state) for w in done.waves] == [
        (1, 0, "completed"), (4, 0, "completed"), (15, 0, "completed")]
    assert {d.device_id: d.status for d in done.devices} == {d: "succeeded" for d in devices}

    events = await suite.events(view.rollout_id)
    assert fleet_harness.plan_of(events) == [devices[:1], devices[1:5], devices[5:]]
    assert sorted(b.device_id for b in bodies(events, DeviceTargeted)) == devices
    assert sorted(b.device_id for b in bodies(events, DeviceSucceeded)) == devices

    # Every device: desired v2, reported v2 RUNNING (upgraded from v1), the v2 process alive.
    after = await fleet.all_running(devices, v2, timeout=15)
    for device_id in devices:
        doc = await suite.desired(device_id)
        assert doc is not None
        desired = doc.apps[APP]
        assert (desired.package.version, desired.package.digest, desired.rollout_id) == (
            "2.0.0", v2.digest, view.rollout_id)
        app = after[device_id]
        assert app.previous_version == "1.0.0"
        assert app.pid != before[device_id].pid
        assert not psutil.pid_exists(before[device_id].pid) or \
            psutil.Process(before[device_id].pid).status() == psutil.STATUS_ZOMBIE
        await fleet.assert_really_runs(device_id, app, "v2")
        assert fleet.fact_types(device_id, "2.0.0")[-1] == "AppHealthy", fleet.fact_types(device_id, "2.0.0")
    print(f"\n{AGENT_COUNT} real agents: first heartbeat {fleet.boot_times()} after spawn, "
          f"ready {ready - began:.1f}s, v1 everywhere {on_v1 - ready:.1f}s, "
          f"canary 1/25%/100% to v2 {on_v2 - on_v1:.1f}s, total {time.monotonic() - began:.1f}s")


async def test_real_agents_failing_health_abort_and_roll_back(suite: Any, fleet: RealFleet) -> None:
    devices = [f"car-{i:02d}" for i in range(6)]
    wave_1, wave_2, wave_3 = devices[:1], devices[1:3], devices[3:]
    fleet.start_agents(devices)
    await fleet.register(devices)
    v1 = await publish(suite, "1.0.0", STAYS_ALIVE.format(tag="v1"))
    # v3 dies at once on every device but the canary's: wave 1 passes, wave 2 fails (and wave 3
    # would too, were it ever touched).
    v3 = await publish(suite, "3.0.0", CRASHES_ON.format(tag="v3", devices=sorted(wave_2 + wave_3)))
    await fleet.wait_ready(devices, timeout=30)
    before = await roll_out_everywhere(suite, fleet, v1, devices, "v1")
    first_docs = {d: await suite.desired(d) for d in devices}

    view = await suite.create(v3, selector=SELECTOR, waves=["1", "50%", "100%"], success=0.75, error=0.2,
                              device_s=30.0)
    assert [w.size for w in view.waves] == [1, 2, 3]
    ended = await suite.wait_status(view.rollout_id, "rolled_back", "aborted", "completed", timeout=60)
    assert ended.status == "rolled_back", (ended.status, ended.reason)
    assert re.match(r"wave 2: [12] of 2 devices failed, more than the 20% error", ended.reason), ended.reason
    assert [w.state for w in ended.waves] == ["completed", "aborted", "waiting"]

    events = await suite.events(view.rollout_id)
    assert fleet_harness.plan_of(events) == [wave_1, wave_2, wave_3]
    touched = wave_1 + wave_2
    assert sorted(b.device_id for b in bodies(events, DeviceTargeted)) == touched
    assert [b.wave for b in bodies(events, WaveStarted)] == [0, 1]
    assert {b.device_id for b in bodies(events, DeviceFailed)} <= set(wave_2)
    assert [b.device_id for b in bodies(events, DeviceSucceeded)] == wave_1
    (rollback,) = bodies(events, RollbackStarted)
    assert rollback.devices == len(touched)
    assert {fleet_harness.previous_of(events)[d].digest for d in touched} == {v1.digest}

    # Waves 1-2 are back on v1: desired, reported, and really running.
    back = await fleet.all_running(touched, v1, timeout=30)
    for device_id in touched:
        doc = await suite.desired(device_id)
        assert doc is not None
        assert doc.apps[APP].package.digest == v1.digest
        await fleet.assert_really_runs(device_id, back[device_id], "v1")
    # Wave 1 ran v3 healthy, then was rolled back by the orchestrator; wave 2's v3 crashed on
    # start and the agent fell back to v1 on its own (AppFailed + AppRolledBack) — unless the
    # other wave-2 device's failure already aborted the wave and the rollback stopped v3 first.
    assert "AppHealthy" in fleet.fact_types(wave_1[0], "3.0.0")
    assert any(re.fullmatch(r"v3 \d+", line) for line in fleet.console(wave_1[0])), fleet.console(wave_1[0])
    fell_back = 0
    for device_id in wave_2:
        kinds = set(fleet.fact_types(device_id, "3.0.0"))
        assert "AppHealthy" not in kinds, kinds
        if {"AppFailed", "AppRolledBack"} <= kinds:
            fell_back += 1
            assert any(line.startswith("v3 crashing") for line in fleet.console(device_id))
        else:
            # Stopped by the orchestrator's rollback — or the rollback came while v3 was still
            # being installed, and v3 never started there.
            assert "AppStopped" in kinds or "AppStarted" not in kinds, kinds
    assert fell_back >= 1

    # Wave 3 never touched: same desired document, same v1 process, no v3 fact at all.
    for device_id in wave_3:
        assert await suite.desired(device_id) == first_docs[device_id]
        app = await fleet.running(device_id, v1)
        assert app is not None, await fleet.reported(device_id)
        assert app.pid == before[device_id].pid
        await fleet.assert_really_runs(device_id, app, "v1")
        assert fleet.fact_types(device_id, "3.0.0") == []
