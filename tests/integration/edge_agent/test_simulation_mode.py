"""Simulation mode end to end: ONE real `python -m sdv_edge_agent --simulate N` process against a
real NATS, driven only through the bus as the cloud drives real agents (desired documents in KV,
signed artifacts in the object store, ops requests), and observed only through the bus (facts,
reported state, console lines, heartbeats) — plus the process table: it must spawn nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psutil
from nats.aio.msg import Msg

from sdv_edge_agent.adapters.simulated_runtime import FIRST_PID, SIMULATED_CRASH, FailurePlan
from sdv_events.auth import Trust, device_inbox_prefix, device_permissions, render_server_config
from sdv_events.bus.rpc import ReplyOk
from sdv_events.codec import decode_as, encode
from sdv_events.schemas.devices import Announce, AnnounceReply, DeviceCredentials
from sdv_events.servers import NatsServer

APP = "speed"


async def all_running(fleet: Any, devices: list[str], version: str, timeout: float = 30.0) -> dict[str, Any]:
    """Every device reports APP RUNNING, healthy, at `version` (checked against KV sdv_reported)."""
    async def check() -> dict[str, Any] | None:
        found = {}
        for device_id in devices:
            rep = await fleet.reported(device_id)
            app = rep.apps.get(APP) if rep else None
            if app is None or (app.state, app.healthy, app.version) != ("RUNNING", True, version):
                return None
            found[device_id] = app
        return found

    return await fleet.until(check, timeout, f"{APP} {version} RUNNING on {len(devices)} devices")  # type: ignore[no-any-return]


async def test_30_simulated_agents_install_run_and_report_through_the_real_agent_code(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    heartbeats: dict[str, dict[str, Any]] = {}

    async def on_heartbeat(msg: Msg) -> None:
        heartbeats[msg.subject.split(".")[2]] = msgspec.json.decode(msg.data)

    await fleet.nc.subscribe("sdv.hb.*", cb=on_heartbeat)
    pkg = await fleet.publish(harness.make_app(tmp_path, APP, "1.0.0", "print('speed')\n", alive_for=0.5))
    began = time.monotonic()
    sim = fleet.simulator(30)
    devices = sim.device_ids
    assert devices[0] == "sim-0000"
    assert devices[-1] == "sim-0029"
    for device_id in devices:
        await fleet.desire(device_id, 1, {APP: pkg})

    running = await all_running(fleet, devices, "1.0.0")
    took = time.monotonic() - began
    for device_id, app in running.items():
        assert app.digest == pkg.digest
        assert app.pid >= FIRST_PID  # a made-up pid, never a real one
        assert not psutil.pid_exists(app.pid)
        await fleet.fact(device_id, "AppHealthy", app=APP)
        assert fleet.fact_types(device_id, APP)[:4] == [
            "AppDownloadStarted", "AppInstalled", "AppStarted", "AppHealthy"]
        banner = f"simulated {APP} 1.0.0 pid {app.pid} (native; no process: simulation mode)"
        await fleet.until(lambda d=device_id, b=banner: b in fleet.lines(d, APP), 10, f"banner of {device_id}")
        # No venv, no app files: the installed version is its marker only.
        assert not list(sim.device_dir(device_id).rglob("venv"))
        assert not (sim.device_dir(device_id) / "run").exists()
    assert sim.children() == []  # no app, no pip, no health command: nothing was spawned

    await fleet.until(lambda: set(devices) <= heartbeats.keys(), 10, "a heartbeat from every device")
    # An agent heartbeats as soon as it is connected, so its first ones may predate the install.
    await fleet.until(lambda: heartbeats["sim-0007"]["apps"].get(APP, {}).get("state") == "RUNNING", 20,
                      "a heartbeat of sim-0007 with the app running")
    beat = heartbeats["sim-0007"]
    assert beat["agent_version"].endswith("+simulated")
    assert beat["limits"] == "docker: simulated: nothing enforced; native: simulated: nothing enforced"
    assert beat["apps"][APP]["state"] == "RUNNING"
    assert beat["apps"][APP]["rss_bytes"] is None  # nothing measured, nothing invented

    # Interactive ops reach the device's own ops server; stdin echoes into its console.
    reply = await fleet.op("sim-0003", "stdin", {"app": APP, "data": "hello\n"})
    assert reply["result"]["state"] == "RUNNING", reply
    await fleet.until(lambda: "echo: hello" in fleet.lines("sim-0003", APP), 10, "the echo on the bus")
    await fleet.op("sim-0003", "pause", {"app": APP})
    await fleet.until_state("sim-0003", APP, "PAUSED")

    assert sim.stop() == 0
    log = sim.log()
    assert "SIMULATION_MODE" in log
    assert "simulation_ready" in log
    assert "Traceback" not in log
    print(f"\n30 simulated agents: desired → all RUNNING in {took:.1f}s")


async def test_a_tampered_artifact_is_refused_in_simulation_even_after_other_devices_verified_it(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    info, artifact = fleet.build(harness.make_app(tmp_path, APP, "1.0.0", "print('speed')\n", alive_for=0.5))
    await fleet.put_artifact(info.object_name, artifact)
    sim = fleet.simulator(6)
    first, later = sim.device_ids[:3], sim.device_ids[3:]
    for device_id in first:
        await fleet.desire(device_id, 1, {APP: info})
    await all_running(fleet, first, "1.0.0")  # the simulator has verified these bytes

    tampered = bytearray(artifact)
    tampered[len(tampered) // 2] ^= 0xFF
    await fleet.put_artifact(info.object_name, bytes(tampered))
    for device_id in later:
        await fleet.desire(device_id, 1, {APP: info})
    for device_id in later:
        failed = await fleet.fact(device_id, "AppFailed", app=APP)
        assert failed.data.stage == "verify"
        assert "sha256" in failed.data.reason
        await fleet.until_state(device_id, APP, "FAILED")
        assert "AppInstalled" not in fleet.fact_types(device_id, APP)
        assert not (sim.device_dir(device_id) / "apps" / APP).exists()
    assert sim.stop() == 0


async def test_exactly_the_devices_the_failure_plan_predicts_fail(fleet: Any, harness: Any, tmp_path: Path) -> None:
    plan = FailurePlan(rate=0.3, seed=11)
    pkg = await fleet.publish(harness.make_app(tmp_path, APP, "1.0.0", "print('speed')\n", alive_for=0.5))
    sim = fleet.simulator(20, "--sim-failure-rate", "0.3", "--sim-seed", "11",
                          SDV_AGENT_CRASH_LOOP="2", SDV_AGENT_RESTART_BASE_S="0.05")
    devices = sim.device_ids
    failing = [d for d in devices if plan.fails(d, APP, "1.0.0")]
    healthy = [d for d in devices if d not in failing]
    assert failing
    assert healthy
    for device_id in devices:
        await fleet.desire(device_id, 1, {APP: pkg})
    await all_running(fleet, healthy, "1.0.0")
    for device_id in failing:
        failed = await fleet.fact(device_id, "AppFailed", app=APP)
        assert failed.data.stage == "run"
        assert SIMULATED_CRASH in failed.data.reason
        await fleet.until_state(device_id, APP, "FAILED")
        assert "AppHealthy" not in fleet.fact_types(device_id, APP)
        assert any(line.startswith(SIMULATED_CRASH) for line in fleet.lines(device_id, APP, "stderr"))
    for device_id in healthy:
        assert "AppFailed" not in fleet.fact_types(device_id, APP)
    assert sim.stop() == 0


async def test_each_simulated_device_enrols_and_works_under_its_own_nats_permissions(
    harness: Any, tmp_path: Path
) -> None:
    """Operator-mode NATS: every simulated device announces over the shared enrolment user, gets a
    JWT of its own from a stand-in registry, and from then on watches, downloads, reports and
    answers ops with nothing but that device's rights (own inbox, own subjects)."""
    trust = Trust.generate()
    server = NatsServer(config_text=render_server_config(trust)).start()
    (tmp_path / "service.creds").write_text(trust.service_creds())
    enrol_creds = tmp_path / "enrol.creds"
    enrol_creds.write_text(trust.enrol_creds())
    fleet = await harness.Fleet(server.url, tmp_path, creds=tmp_path / "service.creds").open()
    announced: list[Announce] = []

    async def stand_in_registry(msg: Msg) -> None:
        request = decode_as(msg.data, Announce)
        announced.append(request)
        expires = int(time.time()) + 3600
        jwt = trust.device_jwt(request.public_key, request.device_id, device_permissions(request.device_id),
                             expires_at=expires)
        reply = AnnounceReply(device_id=request.device_id, status="accepted", credentials=DeviceCredentials(
            jwt, datetime.fromtimestamp(expires, UTC), device_inbox_prefix(request.device_id), trust.devices_account_key))
        await msg.respond(encode(ReplyOk(msgspec.Raw(encode(reply)))))

    try:
        await fleet.nc.subscribe("sdv.announce.*", cb=stand_in_registry)
        pkg = await fleet.publish(harness.make_app(tmp_path, APP, "1.0.0", "print('speed')\n", alive_for=0.5))
        sim = fleet.simulator(5, "--enrol", "--enrol-creds", str(enrol_creds), prefix="sec")
        for device_id in sim.device_ids:
            await fleet.desire(device_id, 1, {APP: pkg})
        await all_running(fleet, sim.device_ids, "1.0.0")
        for device_id in sim.device_ids:
            await fleet.fact(device_id, "AppHealthy", app=APP)
            creds = sim.device_dir(device_id) / "device.creds"
            assert oct(creds.stat().st_mode & 0o777) == "0o600"
        assert sorted(a.device_id for a in announced) == sim.device_ids
        assert len({a.public_key for a in announced}) == 5  # a key pair per device
        assert announced[0].capabilities.runtimes == ["docker", "native"]
        assert announced[0].capabilities.agent_version.endswith("+simulated")
        reply = await fleet.op("sec-0002", "pause", {"app": APP})
        assert reply["result"]["state"] == "PAUSED"
        assert sim.stop() == 0
        assert "permissions violation" not in sim.log().lower(), sim.log()[-3000:]
    finally:
        await fleet.close()
        server.stop()
