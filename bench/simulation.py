"""Simulation-mode benchmark: what `sdv-agent --simulate N` costs, for N devices in one process.

    .venv/bin/python bench/simulation.py --agents 200 1000
    .venv/bin/python bench/simulation.py --quick            # 200 agents, short windows

Starts its own NATS, stores one real signed package, and for each N starts one
`python -m sdv_edge_agent --simulate N` process (heartbeat 5 s, the default; log level WARNING).
Figures per N, read from the bus and from /proc of the simulator process:
- `startup_s`: spawn → every device's reported state in KV `sdv_reported` (written once its link
  is up: SQLite opened, agent started, NATS connected, desired watch subscribed);
- `rss_mb_started`, `rss_mb_running`: resident memory after start-up, and with one app running
  on every device;
- `idle_cpu_pct` (no apps) and `running_cpu_pct` (one app each): CPU of the simulator process
  over a window while every device heartbeats (100 % = one core), with `heartbeats_per_s` seen;
- `deploy_s`: desired documents written for all N → all N report the app RUNNING and healthy
  (download and verification of the artifact by every device, facts, reported state);
- `children`: processes the simulator spawned (must be 0); `stop_s`: SIGTERM → exit.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil

from sdv_events.logs import configure_logging
from sdv_events.servers import NatsServer

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location(
    "sdv_agent_test_harness", HERE.parent / "tests" / "integration" / "edge_agent" / "agent_harness.py")
assert spec is not None
assert spec.loader is not None
harness = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = harness
spec.loader.exec_module(harness)

APP = "bench-sim"


class Observed:
    """Latest reported state per device (a core subscription on the KV subjects) and heartbeats."""

    def __init__(self) -> None:
        self.reported: dict[str, dict[str, Any]] = {}
        self.heartbeats = 0

    async def on_reported(self, msg: Any) -> None:
        self.reported[msg.subject.rsplit(".", 1)[1]] = msgspec.json.decode(msg.data)

    async def on_heartbeat(self, msg: Any) -> None:
        self.heartbeats += 1

    def running(self, devices: list[str]) -> int:
        count = 0
        for device_id in devices:
            app = self.reported.get(device_id, {}).get("apps", {}).get(APP)
            count += bool(app and app["state"] == "RUNNING" and app["healthy"])
        return count


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


def rss_mb(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


async def cpu_pct(pid: int, observed: Observed, seconds: float) -> tuple[float, float]:
    proc = psutil.Process(pid)
    before, beats = proc.cpu_times(), observed.heartbeats
    await asyncio.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return round(100.0 * used / seconds, 1), round((observed.heartbeats - beats) / seconds, 1)


async def one(fleet: Any, observed: Observed, package: Any, agents: int, window: float) -> dict[str, Any]:
    prefix = f"b{agents}"
    began = time.monotonic()
    sim = fleet.simulator(agents, "--heartbeat-s", "5", prefix=prefix, SDV_LOG_LEVEL="WARNING",
                          SDV_AGENT_HEARTBEAT_S="5")
    devices = sim.device_ids
    await wait_for(lambda: set(devices) <= observed.reported.keys(), 300, "every device reported")
    startup = time.monotonic() - began
    pid = sim.process.pid
    await asyncio.sleep(10.0)  # one full heartbeat period plus the phase spread: all are beating
    started_rss = rss_mb(pid)
    idle, idle_beats = await cpu_pct(pid, observed, window)

    began = time.monotonic()
    for i in range(0, agents, 100):
        await asyncio.gather(*(fleet.desire(d, 1, {APP: package}) for d in devices[i:i + 100]))
    await wait_for(lambda: observed.running(devices) == agents, 300, "every device running")
    deploy = time.monotonic() - began
    await asyncio.sleep(5.0)
    running_rss = rss_mb(pid)
    running, running_beats = await cpu_pct(pid, observed, window)
    children = len(sim.children())
    began = time.monotonic()
    code = sim.stop(timeout=60)
    return {
        "agents": agents, "startup_s": round(startup, 2), "rss_mb_started": started_rss,
        "idle_cpu_pct": idle, "heartbeats_per_s": idle_beats, "deploy_s": round(deploy, 2),
        "rss_mb_running": running_rss, "running_cpu_pct": running, "running_heartbeats_per_s": running_beats,
        "children": children, "stop_s": round(time.monotonic() - began, 2), "exit_code": code,
        "window_s": window,
    }


async def bench(agent_counts: list[int], window: float) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="sdv-bench-sim-"))
    results = []
    with NatsServer() as server:
        fleet = await harness.Fleet(server.url, root).open()
        observed = Observed()
        await fleet.nc.subscribe("$KV.sdv_reported.>", cb=observed.on_reported)
        await fleet.nc.subscribe("sdv.hb.>", cb=observed.on_heartbeat)
        try:
            package = await fleet.publish(harness.make_app(root, APP, "1.0.0", "print('bench')\n",
                                                           alive_for=1.0))
            for agents in agent_counts:
                result = await one(fleet, observed, package, agents, window)
                print("  ".join(f"{k}={v}" for k, v in result.items()), flush=True)
                results.append(result)
        finally:
            await fleet.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="200 agents, 10 s windows")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING")
    counts, window = ([200], 10.0) if args.quick else (args.agents, args.window_s)
    results = asyncio.run(bench(counts, window))
    print(json.dumps({"bench": "agent_simulation", "runs": results}))


if __name__ == "__main__":
    main()
