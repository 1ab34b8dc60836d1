"""Simulation mode end to end: ONE real `python -m sdv_edge_agent --simulate N` process against a
real NATS, driven only through the bus as the cloud drives real agents (desired documents in KV,
signed artifacts in the object store, ops requests), and observed only through the bus (facts,
reported state, console lines, heartbeats) — plus the process table: it must spawn nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import psutil
from nats.aio.msg import Msg

from sdv_edge_agent.adapters.simulated_runtime import FIRST_PID, SIMULATED_CRASH, FailurePlan

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
