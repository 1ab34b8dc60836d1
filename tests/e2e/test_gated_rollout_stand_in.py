"""Vehicle-aware activation end to end (issue 15): an operator's gated rollout and held rollout,
through the orchestrator, to REAL agents that download, verify and stage the new version, then
switch only when the vehicle stops (a gate on `Vehicle.Speed`) or when the operator says
`sdv rollout activate`.

What is real: NATS, PostgreSQL, the packager, registry and orchestrator (in-process,
tests/integration/orchestrator/fleet_harness.py), two `python -m sdv_edge_agent` processes with
the native runtime, the signed packages and desired documents, the `sdv` CLI. What is not: the
KUKSA databroker (it cannot run here) — a STAND-IN that pushes each signal change to its
subscribers (tests/integration/vehicle_support.py `PushingDatabroker`).
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg
from typer.testing import CliRunner

from sdv_client.cli import app as sdv
from sdv_events import enrolment
from sdv_events.auth import Role, new_keypair
from sdv_events.codec import decode_envelope
from sdv_events.schemas.deployment import GetPublicKey
from sdv_events.schemas.devices import DeviceView, Kuksa, PreauthorizeDevice
from sdv_events.schemas.packages import PackageInfo, SigningKey

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

fleet_harness = sys.modules["sdv_orchestrator_fleet_harness"]
agent_harness = sys.modules["sdv_agent_test_harness"]
vehicle = sys.modules["sdv_vehicle_test_support"]
until = fleet_harness.until
APP = "gated-app"
SPEED = "Vehicle.Speed"

APP_TOML = """\
[app]
name = "{name}"
version = "{version}"
entry_point = "main.py"
runtime = "native"

[health]
alive_for_s = 1
"""
STAYS_ALIVE = "import os, time\nprint('{tag}', os.getpid(), flush=True)\ntime.sleep(3600)\n"


async def cli(url: str, *args: str) -> Any:
    result = await asyncio.to_thread(CliRunner().invoke, sdv, [*args, "--json"],
                                     env={"SDV_NATS_URL": url, "SDV_NATS_CREDS": "", "SDV_NATS_CA": ""})
    assert result.exit_code == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer.pop("ok") is True, answer
    return answer["rollout"] if set(answer) == {"rollout"} else answer


async def publish(suite: Any, tmp_path: Path, version: str) -> PackageInfo:
    folder = tmp_path / "apps" / version
    folder.mkdir(parents=True)
    (folder / "sdv-app.toml").write_text(APP_TOML.format(name=APP, version=version))
    (folder / "main.py").write_text(STAYS_ALIVE.format(tag=f"{APP} {version}"))
    package: PackageInfo = await suite.packages.publish_dir(folder)
    return package


async def register(suite: Any, device_id: str) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    await suite.commands.call("registry", "preauthorize",
                              PreauthorizeDevice(device_id, token, {"fleet": "gated"}), DeviceView)
    answer = await enrolment.announce(
        suite.nc, new_keypair(Role.USER), device_id,
        fleet_harness.capabilities(python_version=platform.python_version(), kuksa=Kuksa(present=True)),
        token=token, timeout=10)
    assert answer.status == "accepted", answer


async def test_stand_in_a_gated_rollout_switches_when_the_vehicle_stops_and_a_held_one_on_activate(
    fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path,
) -> None:
    databroker = await vehicle.PushingDatabroker({SPEED: 50.0}).serve()
    agents: dict[str, Any] = {}
    async with fleet_harness.running_suite(fresh_nats_url, database_url, schema, tmp_path) as suite:
        try:
            started: dict[tuple[str, str], float] = {}  # (device, version) → when its AppStarted came

            async def on_started(msg: Msg) -> None:
                fact = decode_envelope(msg.data).data
                started.setdefault((fact.device_id, fact.version), time.monotonic())

            await suite.nc.subscribe("sdv.evt.agent.*.AppStarted", cb=on_started)
            key = await suite.packages.signing_key()
            orchestrator = await suite.commands.call("orchestrator", "public_key", GetPublicKey(), SigningKey)
            for device_id in ("car-gated", "car-held"):
                await register(suite, device_id)
                agents[device_id] = agent_harness.AgentProc(
                    device_id, tmp_path / "agents" / device_id, suite.url, key.public_key_b64,
                    orchestrator.public_key_b64, {"SDV_AGENT_DATABROKER": databroker.address}).start()

            v1 = await publish(suite, tmp_path, "1.0.0")
            await publish(suite, tmp_path, "2.0.0")
            first = await suite.create(v1, selector="fleet=gated", kind="all-at-once", device_s=60.0)
            done = await suite.wait_status(first.rollout_id, "completed", "aborted", "rolled_back", timeout=90)
            assert done.status == "completed", done

            # A gated rollout while the vehicle drives at 50: downloaded, verified, staged, deferred —
            # with the signal and its value — and not failed by its 8 s device timeout.
            gated = await cli(suite.url, "rollout", "create", APP, "2.0.0", "--device", "car-gated",
                              "--strategy", "all-at-once", "--device-timeout", "8",
                              "--gate", f"{SPEED} == 0")
            rid = gated["rollout_id"]

            async def deferred_view() -> Any:
                view = await cli(suite.url, "rollout", "get", rid)
                rows = [d for d in view["devices"] if d.get("deferral")]
                return view if rows and rows[0]["deferral"]["value"] == 50.0 else None

            view = await until(deferred_view, 60, "the device deferred with the speed it saw")
            deferral = view["devices"][0]["deferral"]
            assert (deferral["gate"], deferral["signal"]) == (f"{SPEED} == 0", SPEED)
            assert (view["deferred_total"], view["deferred_by"]) == (1, {f"{SPEED} == 0": 1})
            await asyncio.sleep(9)  # past the device timeout: a deferral is not a failure
            view = await cli(suite.url, "rollout", "get", rid)
            assert (view["status"], view["failed_total"]) == ("running", 0), view
            assert ("car-gated", "2.0.0") not in started

            # The vehicle stops: the staged version runs within a second, the rollout completes.
            stopped_at = time.monotonic()
            await databroker.set(SPEED, 0.0)
            await until(lambda: _true(("car-gated", "2.0.0") in started), 10, "v2 started on car-gated")
            assert started[("car-gated", "2.0.0")] - stopped_at < 1.0
            done = await suite.wait_status(rid, "completed", "aborted", "rolled_back", timeout=30)
            assert done.status == "completed", done

            # Held: downloaded now, switched on the operator's word, at once.
            held = await cli(suite.url, "rollout", "create", APP, "2.0.0", "--device", "car-held",
                             "--strategy", "all-at-once", "--hold")
            hid = held["rollout_id"]

            async def held_view() -> Any:
                view = await cli(suite.url, "rollout", "get", hid)
                return view if view["deferred_by"].get("held") == 1 else None

            await until(held_view, 60, "the held device staged and waiting")
            assert ("car-held", "2.0.0") not in started
            asked_at = time.monotonic()
            activated = await cli(suite.url, "rollout", "activate", hid, "--device", "car-held")
            assert activated["rollout_id"] == hid
            await until(lambda: _true(("car-held", "2.0.0") in started), 10, "v2 started on car-held")
            assert started[("car-held", "2.0.0")] - asked_at < 2.0  # no download left to do
            done = await suite.wait_status(hid, "completed", "aborted", "rolled_back", timeout=30)
            assert done.status == "completed", done
            assert done.activated_total == 1
        finally:
            for agent in agents.values():
                agent.stop()
            agent_harness.kill_processes_under(tmp_path / "agents")
            await databroker.stop()


async def _true(value: bool) -> bool:
    return value
