"""The monitor's inventory from REAL edge agents: what each agent said (its facts, recorded in
the monitor's store) and what it reports (restarts, pid) — beside a real rollout."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
fleet_harness = sys.modules["sdv_orchestrator_fleet_harness"]
until = fleet_harness.until


def _load(name: str, path: Path) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# Loaded by path (tests/ is not a package): the real fleet of the canary tests, the monitor's
# start-up of tests/integration/monitor.
canary = _load("sdv_e2e_canary_real_agents", Path(__file__).with_name("test_canary_real_agents.py"))
monitor_support = _load("sdv_monitor_test_support",
                        Path(__file__).parents[1] / "integration" / "monitor" / "conftest.py")
APP, STAYS_ALIVE, RealFleet = canary.APP, canary.STAYS_ALIVE, canary.RealFleet
publish, roll_out_everywhere = canary.publish, canary.roll_out_everywhere


fleet = canary.fleet  # the same fixture: real agent processes, none left behind


async def test_inventory_shows_what_real_agents_run_with_their_facts_and_reported_pids(
        suite: Any, fleet: Any, schema: str) -> None:
    monitor = await monitor_support.start_monitor(suite, f"{schema}_m")
    try:
        devices = ["car-a", "car-b"]
        fleet.start_agents(devices)
        await fleet.register(devices)
        v1 = await publish(suite, "1.0.0", STAYS_ALIVE.format(tag="v1"))
        await fleet.wait_ready(devices, timeout=45)
        reported = await roll_out_everywhere(suite, fleet, v1, devices, "v1")

        for device_id in devices:
            async def shown(device_id: str = device_id) -> Any:
                doc = await monitor.get(f"/api/devices/{device_id}")
                apps = doc["apps"]
                ok = (len(apps) == 1 and apps[0]["state"] == "RUNNING" and apps[0]["healthy"]
                      and apps[0]["pid"] == reported[device_id].pid and apps[0]["rss_bytes"])
                return doc if ok else None

            doc = await until(shown, 20, f"the monitor shows {APP} running on {device_id}")
            (app,) = doc["apps"]
            assert (app["app"], app["installed_version"], app["desired_version"]) == (APP, "1.0.0", "1.0.0")
            assert app["restarts"] == 0
            assert app["reported_state"] == "RUNNING"
            lines = [h["summary"] for h in doc["history"]]
            # The agent's own account, in its words: download, install, start, healthy.
            for step in ("download of 1.0.0 started", "1.0.0 installed", "1.0.0 started", "1.0.0 healthy"):
                assert any(step in line for line in lines), (step, lines)
            assert doc["device"]["online"] is True or doc["device"]["status"] == "accepted"

        packages = await monitor.get("/api/packages", name=APP)
        (row,) = packages["items"]
        assert (row["version"], row["installed_on"], row["desired_on"]) == ("1.0.0", 2, 2)
    finally:
        await monitor.http.aclose()
        await monitor.running.stop()
