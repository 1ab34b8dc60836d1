"""Rollouts end to end with 50 SIMULATED edge agents in ONE `sdv-agent --simulate 50 --enrol` process.

The cloud side is real (tests/integration/orchestrator/fleet_harness.py): NATS, PostgreSQL, the
packager, registry and orchestrator. The devices run the real agent code — enrolment (announce
with a pre-authorisation token), desired-state watch, reconcile, supervisors, facts, reported
state, heartbeats — with the simulated runtime and installer: real signed packages are
downloaded and verified, nothing is spawned. Compare test_canary_real_agents.py (20 real agent
processes, real app processes).

What "the device runs version X" means here: the orchestrator's desired document in KV
`sdv_desired` and the agent's own ReportedState in KV `sdv_reported` (RUNNING, healthy, that
version and digest), plus the agent's facts on the bus.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from sdv_edge_agent.adapters.simulated_runtime import FailurePlan
from sdv_events.codec import decode_envelope
from sdv_events.envelope import Envelope
from sdv_events.provisioning import REPORTED_BUCKET
from sdv_events.schemas.deployment import GetPublicKey, ReportedApp, ReportedState
from sdv_events.schemas.devices import DeviceList, DeviceView, ListDevices, PreauthorizeDevice
from sdv_events.schemas.packages import PackageInfo, SigningKey
from sdv_events.schemas.rollouts import DeviceSucceeded, DeviceTargeted, RollbackStarted

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

APP = "sim-canary"
AGENTS = 50
LABELS = {"fleet": "simulated"}
SELECTOR = "fleet=simulated"
APP_TOML = """\
[app]
name = "{name}"
version = "{version}"
entry_point = "main.py"
runtime = "native"

[health]
alive_for_s = 0.5
"""


fleet_harness = sys.modules["sdv_orchestrator_fleet_harness"]  # loaded by conftest.py
agent_harness = sys.modules["sdv_agent_test_harness"]
until, bodies = fleet_harness.until, fleet_harness.bodies




class SimulatedFleet:
    """One simulator process enrolled with the registry, and what the bus saw of its devices."""

    def __init__(self, suite: Any, root: Path, public_key: str, orchestrator_key: str) -> None:
        self.suite = suite
        self.root = root
        self.public_key = public_key
        self.orchestrator_key = orchestrator_key
        self.token = f"tok-{uuid.uuid4().hex}"
        self.facts: list[Envelope] = []
        self.simulator: Any = None

    async def start(self, *args: str) -> list[str]:
        """Pre-authorise the simulator's device ids with the fleet's labels, start it with
        `--enrol`, and wait until the registry lists every device as accepted."""
        await self.suite.nc.subscribe("sdv.evt.agent.>", cb=self._on_fact)
        self.simulator = agent_harness.SimulatorProc(
            AGENTS, self.root, self.suite.url, self.public_key, self.orchestrator_key,
            ["--enrol", "--fleet-token", self.token, *args], {"SDV_LOG_LEVEL": "INFO"})
        devices: list[str] = self.simulator.device_ids
        await asyncio.gather(*(self.suite.commands.call(
            "registry", "preauthorize", PreauthorizeDevice(d, self.token, LABELS), DeviceView) for d in devices))
        self.simulator.start()

        async def listed() -> bool:
            assert self.simulator.process.poll() is None, self.simulator.log()[-3000:]
            page = await self.suite.commands.call("registry", "list", ListDevices(
                selector=SELECTOR, status="accepted", limit=10_000), DeviceList)
            return set(devices) <= {d.device_id for d in page.devices}

        await until(listed, 30, "the registry lists every simulated device as accepted")
        return devices

    async def _on_fact(self, msg: Msg) -> None:
        self.facts.append(decode_envelope(msg.data))

    def fact_types(self, device_id: str, version: str) -> list[str]:
        return [f.type.split(".")[1] for f in self.facts
                if f.data.device_id == device_id and getattr(f.data, "app", None) == APP
                and f.data.version == version]

    async def reported(self, device_id: str) -> ReportedState | None:
        try:
            raw = await self.suite.nc.jetstream().get_last_msg(
                f"KV_{REPORTED_BUCKET}", f"$KV.{REPORTED_BUCKET}.{device_id}", direct=True)
        except nats.js.errors.NotFoundError:
            return None
        return msgspec.json.decode(raw.data, type=ReportedState)

    async def running(self, device_id: str, package: PackageInfo) -> ReportedApp | None:
        state = await self.reported(device_id)
        app = state.apps.get(APP) if state else None
        ok = (app is not None and app.state == "RUNNING" and app.healthy
              and (app.version, app.digest) == (package.version, package.digest))
        return app if ok else None

    async def all_running(self, devices: list[str], package: PackageInfo, timeout: float = 20) -> None:
        async def check() -> bool:
            return all([await self.running(d, package) for d in devices])

        await until(check, timeout, f"{package.version} reported RUNNING on {len(devices)} devices")

    def close(self) -> None:
        if self.simulator is not None:
            assert self.simulator.children() == []  # 50 devices, two versions: nothing spawned
            code = self.simulator.stop()
            assert code == 0, self.simulator.log()[-3000:]
            assert "Traceback" not in self.simulator.log()




@pytest.fixture
async def fleet(suite: Any, tmp_path: Path) -> AsyncIterator[SimulatedFleet]:
    key = await suite.packages.signing_key()
    orchestrator = await suite.commands.call("orchestrator", "public_key", GetPublicKey(), SigningKey)
    fleet = SimulatedFleet(suite, tmp_path / "simulator", key.public_key_b64, orchestrator.public_key_b64)
    try:
        yield fleet
    finally:
        if fleet.simulator is not None and fleet.simulator.process.poll() is None:
            fleet.simulator.stop()


async def publish(suite: Any, version: str) -> PackageInfo:
    app = suite.tmp_path / "apps" / f"{APP}-{version}"
    app.mkdir(parents=True)
    (app / "sdv-app.toml").write_text(APP_TOML.format(name=APP, version=version))
    (app / "main.py").write_text(f"print('{APP} {version}')\n")
    info: PackageInfo = await suite.packages.publish_dir(app)
    return info


async def everywhere(suite: Any, fleet: SimulatedFleet, package: PackageInfo, devices: list[str]) -> None:
    view = await suite.create(package, selector=SELECTOR, kind="all-at-once", device_s=30.0)
    done = await suite.wait_status(view.rollout_id, "completed", "rolled_back", "aborted", timeout=30)
    assert done.status == "completed", done.reason
    assert (done.waves[0].succeeded, done.waves[0].failed) == (len(devices), 0)
    await fleet.all_running(devices, package)




async def test_canary_to_50_simulated_agents_in_one_process_succeeds(suite: Any, fleet: SimulatedFleet) -> None:
    began = time.monotonic()
    v1, v2 = await publish(suite, "1.0.0"), await publish(suite, "2.0.0")
    devices = await fleet.start()
    enrolled = time.monotonic()
    await everywhere(suite, fleet, v1, devices)
    on_v1 = time.monotonic()

    view = await suite.create(v2, selector=SELECTOR, waves=["1", "10%", "50%", "100%"], device_s=30.0)
    assert [w.size for w in view.waves] == [1, 4, 20, 25]  # cumulative shares
    done = await suite.wait_status(view.rollout_id, "completed", "rolled_back", "aborted", timeout=40)
    on_v2 = time.monotonic()
    assert done.status == "completed", done.reason
    assert [(w.succeeded, w.failed) for w in done.waves] == [(1, 0), (4, 0), (20, 0), (25, 0)]
    events = await suite.events(view.rollout_id)
    assert sorted(b.device_id for b in bodies(events, DeviceTargeted)) == devices
    assert sorted(b.device_id for b in bodies(events, DeviceSucceeded)) == devices

    await fleet.all_running(devices, v2)
    for device_id in devices:
        doc = await suite.desired(device_id)
        assert (doc.apps[APP].package.digest, doc.apps[APP].rollout_id) == (v2.digest, view.rollout_id)
        app = await fleet.running(device_id, v2)
        assert app is not None
        assert app.previous_version == "1.0.0"  # a real upgrade of a running version
        assert fleet.fact_types(device_id, "2.0.0")[-1] == "AppHealthy", fleet.fact_types(device_id, "2.0.0")
    fleet.close()
    print(f"\n{AGENTS} simulated agents in one process: enrolled {enrolled - began:.1f}s, "
          f"v1 everywhere {on_v1 - enrolled:.1f}s, canary 1/10%/50%/100% to v2 {on_v2 - on_v1:.1f}s")


async def test_a_new_version_failing_everywhere_aborts_the_canary_and_rolls_back(
    suite: Any, fleet: SimulatedFleet
) -> None:
    v1, v2 = await publish(suite, "1.0.0"), await publish(suite, "2.0.0")
    devices = await fleet.start("--sim-failure-rate", "1.0", "--sim-fail-versions", "2.0.0", "--sim-seed", "5")
    assert all(FailurePlan(1.0, 5, ("2.0.0",)).fails(d, APP, "2.0.0") for d in devices)
    assert not any(FailurePlan(1.0, 5, ("2.0.0",)).fails(d, APP, "1.0.0") for d in devices)
    await everywhere(suite, fleet, v1, devices)
    before = {d: await suite.desired(d) for d in devices}

    view = await suite.create(v2, selector=SELECTOR, waves=["1", "10%", "100%"], success=0.75, error=0.2,
                              device_s=30.0)
    ended = await suite.wait_status(view.rollout_id, "rolled_back", "aborted", "completed", timeout=40)
    assert ended.status == "rolled_back", (ended.status, ended.reason)
    assert [w.state for w in ended.waves] == ["aborted", "waiting", "waiting"]
    canary = devices[:1]
    events = await suite.events(view.rollout_id)
    assert [b.device_id for b in bodies(events, DeviceTargeted)] == canary
    (rollback,) = bodies(events, RollbackStarted)
    assert rollback.devices == len(canary)
    assert fleet_harness.previous_of(events)[canary[0]].digest == v1.digest

    # The canary crashed on v2 before it was healthy, fell back to v1 on its own, and the
    # orchestrator's rollback put v1 back in its desired document.
    await fleet.all_running(canary, v1)
    doc = await suite.desired(canary[0])
    assert doc.apps[APP].package.digest == v1.digest
    kinds = fleet.fact_types(canary[0], "2.0.0")
    assert "AppHealthy" not in kinds
    assert {"AppFailed", "AppRolledBack"} <= set(kinds), kinds
    # Every other device was never touched: same desired document, still on v1, no v2 fact.
    for device_id in devices[1:]:
        assert await suite.desired(device_id) == before[device_id]
        assert await fleet.running(device_id, v1) is not None
        assert fleet.fact_types(device_id, "2.0.0") == []
    fleet.close()
