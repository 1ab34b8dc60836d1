"""An Eclipse Velocitas app, published unchanged, rolled out to real agents that run it against a
databroker STAND-IN and a real MQTT broker (issue 16).

What is real: NATS, PostgreSQL, the packager, registry and orchestrator (in-process), three
`python -m sdv_edge_agent` processes, the example folder examples/apps/velocitas-speed exactly as
committed (a VehicleApp on velocitas-sdk 0.15.7 and its generated `vehicle` model), its 28 pinned
wheels for x86_64 and aarch64, Debian's mosquitto, and the `sdv` CLI. What is not: the KUKSA
databroker (a Rust program that cannot run here) — a gRPC stand-in built from kuksa-client's and
velocitas-sdk's own generated protos serves kuksa.val.v1/v2 and sdv.databroker.v1
(tests/integration/vehicle_support.py).

The agents run without --enrol (a plain NATS server issues no credentials), so the test registers
each device the way the canary test does (pre-authorise + announce), with the capabilities the
agent itself reports: the signal-catalogue digest it sent in its `SignalCatalogReported` fact,
and the MQTT broker it found.
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.msg import Msg
from typer.testing import CliRunner

from sdv_client.cli import app as sdv
from sdv_events import enrolment
from sdv_events.auth import Role, new_keypair
from sdv_events.codec import decode_envelope
from sdv_events.schemas.agent import SignalCatalogReported
from sdv_events.schemas.deployment import GetPublicKey
from sdv_events.schemas.devices import DeviceView, Kuksa, Mqtt, PreauthorizeDevice
from sdv_events.schemas.packages import PackageInfo, SigningKey

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

fleet_harness = sys.modules["sdv_orchestrator_fleet_harness"]
agent_harness = sys.modules["sdv_agent_test_harness"]
vehicle = sys.modules["sdv_vehicle_test_support"]
until = fleet_harness.until
APP = "speedreporter"


async def cli(url: str, *args: str) -> Any:
    result = await asyncio.to_thread(CliRunner().invoke, sdv, [*args, "--json"],
                                     env={"SDV_NATS_URL": url, "SDV_NATS_CREDS": "", "SDV_NATS_CA": ""})
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


async def register(suite: Any, device_id: str, labels: dict[str, str], **caps: Any) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    await suite.commands.call("registry", "preauthorize", PreauthorizeDevice(device_id, token, labels), DeviceView)
    answer = await enrolment.announce(suite.nc, new_keypair(Role.USER), device_id,
                                      fleet_harness.capabilities(**caps), token=token, timeout=10)
    assert answer.status == "accepted", answer


async def test_an_unchanged_velocitas_app_runs_on_real_agents_against_the_stand_in_and_mqtt(
    fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path,
) -> None:
    wheelhouse = await asyncio.to_thread(vehicle.velocitas_wheelhouse)
    protos = vehicle.velocitas_protos(wheelhouse, tmp_path / "protos")
    full = await vehicle.start_stand_in(vehicle.VehicleSignals(), protos)
    no_speed = vehicle.VehicleSignals(catalog={k: v for k, v in vehicle.DEFAULT_CATALOG.items() if k != vehicle.SPEED})
    lacking = await vehicle.start_stand_in(no_speed, protos)
    mqtt = vehicle.start_mosquitto(tmp_path)
    agents: dict[str, Any] = {}
    async with fleet_harness.running_suite(fresh_nats_url, database_url, schema, tmp_path,
                                           wheelhouse=wheelhouse) as suite:
        try:
            catalogs: dict[str, SignalCatalogReported] = {}

            async def on_catalog(msg: Msg) -> None:
                fact = decode_envelope(msg.data).data
                catalogs[fact.device_id] = fact

            await suite.nc.subscribe("sdv.evt.agent.*.SignalCatalogReported", cb=on_catalog)
            key = await suite.packages.signing_key()
            orchestrator = await suite.commands.call("orchestrator", "public_key", GetPublicKey(), SigningKey)
            brokers = {"velo-1": full, "velo-2": full, "velo-3": lacking}
            for device_id, broker in brokers.items():
                agents[device_id] = agent_harness.AgentProc(
                    device_id, tmp_path / "agents" / device_id, suite.url, key.public_key_b64,
                    orchestrator.public_key_b64,
                    {"SDV_AGENT_DATABROKER": broker.address, "SDV_AGENT_MQTT": mqtt.url}).start()

            # Published unchanged: the folder as committed, a version given on the command line.
            published = await cli(suite.url, "package", "publish", str(vehicle.VELOCITAS_APP), "--version", "1.0.0")
            package = msgspec.convert(published["package"], PackageInfo)
            assert (package.name, package.entry_point, package.mqtt) == (APP, "app/src/main.py", True)
            assert package.platforms == ["3.11/aarch64", "3.11/x86_64"]  # one package, two platforms
            assert {"velocitas-sdk==0.15.7", "grpcio==1.64.1", "setuptools==80.10.2"} <= set(package.resolved)
            assert (package.vss_reads, package.vss_version) == (["Vehicle.Speed"], "5.0")

            # Each agent reports the catalogue its databroker serves; the devices are registered
            # with what their agents found.
            await until(lambda: _true(set(brokers) <= catalogs.keys()), 30, "signal catalogue facts")
            assert vehicle.SPEED in catalogs["velo-1"].signals
            assert vehicle.SPEED not in catalogs["velo-3"].signals
            for device_id in brokers:
                await register(suite, device_id, {"fleet": "velocitas"},
                               python_version=platform.python_version(),
                               kuksa=Kuksa(present=True, catalog=catalogs[device_id].digest,
                                           signals=len(catalogs[device_id].signals)),
                               mqtt=Mqtt(present=True, address=mqtt.url))
            await register(suite, "velo-orin", {"fleet": "arm"}, arch="aarch64", mqtt=Mqtt(present=True))
            await register(suite, "velo-pi", {"fleet": "arm"}, arch="armv7l", mqtt=Mqtt(present=True))
            await register(suite, "velo-no-mqtt", {"fleet": "arm"}, arch="aarch64")

            view = await suite.create(package, selector="fleet=velocitas", kind="all-at-once", device_s=120.0)
            # The device whose databroker lacks Vehicle.Speed is left out, with that reason.
            assert view.excluded == {"velo-3": "databroker lacks signal Vehicle.Speed"}
            done = await suite.wait_status(view.rollout_id, "completed", "aborted", "rolled_back", timeout=150)
            assert done.status == "completed", (done.reason, msgspec.to_builtins(done), {d: a.log()[-2000:] for d, a in agents.items()})

            # It runs: speeds from the stand-in (sdv.databroker.v1) arrive on the real MQTT broker.
            speeds = await asyncio.to_thread(mqtt.subscribe, "speedreporter/currentSpeed", 3, 30)
            assert len(speeds) == 3
            assert {json.loads(s)["speed"] for s in speeds} <= {100.0, 150.0, 90.0}
            assert full.signals.subscribers["sdv.databroker.v1"] >= 2  # both agents' apps
            assert lacking.signals.subscribers["sdv.databroker.v1"] == 0

            # Its log line reaches `sdv app logs`.
            async def logged() -> bool:
                lines = (await cli(suite.url, "app", "logs", "velo-1", APP, "-n", "200"))["lines"]
                return any("SpeedReporter follows Vehicle.Speed" in entry["line"] for entry in lines)

            await until(logged, 30, "the app's log line in `sdv app logs`")

            # The same package is planned for an aarch64 device; not for one no platform fits,
            # nor for one without the MQTT broker the app needs.
            arm = await suite.create(package, selector="fleet=arm", kind="all-at-once", device_s=5.0)
            assert [d.device_id for d in arm.devices] == ["velo-orin"]
            assert arm.excluded == {
                "velo-pi": "no platform of the package fits armv7l/python 3.11 (it carries 3.11/aarch64, 3.11/x86_64)",
                "velo-no-mqtt": "no MQTT broker (the app publishes and subscribes through one)",
            }
            await suite.op("cancel", arm.rollout_id, "test done")
        finally:
            for agent in agents.values():
                agent.stop()
            agent_harness.kill_processes_under(tmp_path / "agents")
            mqtt.stop()
            await full.server.stop(0)
            await lacking.server.stop(0)


async def _true(value: bool) -> bool:
    return value
