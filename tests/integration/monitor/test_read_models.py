"""The monitor's read models driven by real rollouts (simulated agents answer with facts):
fleet, rollouts, inventory, packages and device history, served over its HTTP API; and a
rebuild from the services' stores gives the same tables."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)
APP = "watch-app"


async def test_a_rollout_drives_fleet_rollout_inventory_and_package_views(suite: Any, monitor: Any) -> None:
    h = suite
    agents = await h.add_agents(6)
    v1 = await h.publish(APP, "1.0.0")
    first = await h.create(v1, selector="fleet=sim", kind="all-at-once")
    await h.wait_status(first.rollout_id, "completed")
    v2 = await h.publish(APP, "1.1.0")
    agents[2].script["1.1.0"] = "fail"
    second = await h.create(v2, selector="fleet=sim", waves=["1", "100%"], error=0.1)
    await h.wait_status(second.rollout_id, "rolled_back", "aborted", "completed")

    async def settled() -> Any:
        doc = await monitor.get(f"/api/rollouts/{second.rollout_id}")
        done = doc["rollout"]["status"] == "rolled_back" and doc["rollout"]["rollback_completed_at"]
        return doc if done else None

    detail = await monitor.until(settled, 30.0, "the monitor sees the second rollout rolled back")
    rollout = detail["rollout"]
    assert (rollout["app"], rollout["version"], rollout["devices"]) == (APP, "1.1.0", 6)
    assert rollout["failed"] >= 1
    assert "failed" in rollout["reason"]
    assert [w["size"] for w in detail["waves"]] == [1, 5]
    statuses = Counter(d["status"] for d in detail["devices"])
    # Every targeted device went back to its previous version; the one that failed says both.
    assert statuses == {"rolled_back": 6}
    assert (rollout["rolled_back"], rollout["rollback_unconfirmed"]) == (6, 0)
    reasons = Counter(d["reason"] for d in detail["devices"])
    assert reasons == {"previous version running again": 5, "health: simulated failure; rolled back": 1}
    assert detail["devices_total"] == 6

    fleet = await monitor.get("/api/devices")
    assert fleet["total"] == 6
    assert {d["status"] for d in fleet["items"]} == {"accepted"}
    assert all(d["agent_version"] == "sim-0.1" and d["apps"] == 1 for d in fleet["items"])

    # The failing device: its agent said 1.1.0 FAILED (history), and the rollback put its
    # desired version back to 1.0.0, which it runs.
    failing = agents[2].device_id

    async def history_of_failing() -> Any:
        doc = await monitor.get(f"/api/devices/{failing}")
        lines = [e["summary"] for e in doc["history"]]
        return doc if any(f"{APP} 1.1.0 failed" in line for line in lines) else None

    doc = await monitor.until(history_of_failing, 15.0, "the failing device's history")
    (app,) = doc["apps"]
    assert (app["desired_version"], app["installed_version"]) == ("1.0.0", "1.0.0")
    assert app["desired_rollout"] is None  # restored by the rollback, not assigned by a rollout
    lines = [e["summary"] for e in doc["history"]]
    assert any("accepted" in line for line in lines)
    assert any(f"rollout {second.rollout_id}: failed" in line for line in lines)
    assert any(f"rollout {first.rollout_id}: succeeded" in line for line in lines)
    assert doc["device"]["device_id"] == failing
    assert doc["capabilities"]["arch"] == "x86_64"

    # A device that took 1.1.0 in the canary wave and was rolled back shows it in its history.
    canary = next(d["device_id"] for d in detail["devices"] if d["wave"] == 0)
    canary_doc = await monitor.get(f"/api/devices/{canary}")
    assert canary_doc["apps"][0]["desired_version"] == "1.0.0"

    async def every_device_on_1_0_0() -> Any:  # the devices' facts follow the rollout's events
        found = {p["version"]: p for p in (await monitor.get("/api/packages", name=APP))["items"]}
        ok = found.get("1.0.0", {}).get("installed_on") == 6 and found["1.0.0"]["desired_on"] == 6
        return found if ok else None

    by_version = await monitor.until(every_device_on_1_0_0, 15.0, "1.0.0 installed on every device")
    assert set(by_version) == {"1.0.0", "1.1.0"}
    assert by_version["1.0.0"]["installed_on"] == 6  # every device still runs 1.0.0
    assert by_version["1.0.0"]["desired_on"] == 6

    status = await monitor.get("/api/status")
    assert status["devices"] == 6
    assert status["by_status"] == {"accepted": 6}


TABLES = ("devices", "device_apps", "rollouts", "rollout_waves", "rollout_devices", "rollout_excluded",
          "packages", "device_history", "inventory_previous", "inventory_previous_packages")


async def _snapshot(suite: Any, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    import asyncpg

    conn = await asyncpg.connect(suite.database_url)
    try:
        return {t: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {schema}.{t} ORDER BY 1, 2")]
                for t in TABLES}
    finally:
        await conn.close()


async def test_rebuild_from_the_services_stores_gives_identical_tables(suite: Any, monitor: Any) -> None:
    from sdv_events.bus import CommandClient
    from sdv_events.processing.admin import REBUILD_COMMAND, ReadModelRebuilt, RebuildReadModel

    h = suite
    agents = await h.add_agents(5)
    v1 = await h.publish(APP, "1.0.0")
    first = await h.create(v1, selector="fleet=sim", kind="all-at-once")
    await h.wait_status(first.rollout_id, "completed")
    v2 = await h.publish(APP, "1.1.0")
    agents[0].script["1.1.0"] = "fail"
    second = await h.create(v2, selector="fleet=sim", waves=["1", "100%"])
    await h.wait_status(second.rollout_id, "rolled_back", "aborted")

    async def caught_up() -> bool:
        doc = await monitor.get(f"/api/rollouts/{second.rollout_id}")
        history = await monitor.get(f"/api/devices/{agents[0].device_id}")
        (app,) = history["apps"]
        # Everything settled: the failure recorded, the rollback answered by the device.
        return doc["rollout"]["status"] == "rolled_back" and any(
            "1.1.0 failed" in e["summary"] for e in history["history"]) and (
            app["desired_version"], app["installed_version"], app["state"]) == ("1.0.0", "1.0.0", "RUNNING")

    await monitor.until(caught_up, 15.0, "the monitor caught up")
    schema = monitor.settings.schema_name
    before = await _snapshot(h, schema)
    assert len(before["devices"]) == 5
    assert len(before["rollouts"]) == 2

    client = CommandClient(h.nc, actor="test", timeout=60.0)
    done = await client.call("monitor", REBUILD_COMMAND, RebuildReadModel("monitor_views"), ReadModelRebuilt)
    assert done.events > 0
    after = await _snapshot(h, schema)
    for table in TABLES:
        diff = [[(i, x, y) for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
                for a, b in zip(after[table], before[table], strict=False) if a != b]
        assert after[table] == before[table], (table, diff[:2])


BAD_REQUESTS = [
    ("/api/devices", {"limit": "0"}), ("/api/devices", {"limit": "100000"}),
    ("/api/devices", {"offset": "-1"}), ("/api/devices", {"online": "maybe"}),
    ("/api/devices", {"status": "x' OR 1=1 --"}), ("/api/devices", {"app": "a" * 500}),
    ("/api/rollouts", {"limit": "ten"}), ("/api/packages", {"channel": "nightly"}),
    ("/api/devices/bad%20id", {}), ("/api/devices/" + "x" * 200, {}),
    ("/api/rollouts/..%2F..%2Fetc", {}), ("/api/devices/car-1", {"history_limit": "1e9"}),
]


async def test_malformed_api_parameters_get_a_4xx_with_a_reason(monitor: Any) -> None:
    for path, params in BAD_REQUESTS:
        response = await monitor.http.get(path, params=params)
        assert 400 <= response.status_code < 500, (path, params, response.status_code, response.text)
        assert response.json()  # a body that says why


async def test_unknown_device_and_rollout_are_404_with_a_message(monitor: Any) -> None:
    for path in ("/api/devices/nobody", "/api/rollouts/no-such-rollout"):
        response = await monitor.http.get(path)
        assert response.status_code == 404
        assert "no " in response.json()["message"]


async def test_openapi_document_describes_every_route_and_its_response_type(monitor: Any) -> None:
    doc = await monitor.get("/openapi.json")
    for route in ("/api/devices", "/api/devices/{device_id}", "/api/rollouts", "/api/rollouts/{rollout_id}",
                  "/api/packages", "/api/status", "/healthz", "/readyz"):
        assert route in doc["paths"], route
    schemas = doc["components"]["schemas"]
    assert {"DevicePage", "DeviceDetail", "RolloutDetail", "PackagePage", "FleetStatus"} <= set(schemas)
    assert "installed_version" in schemas["DeviceApp"]["properties"]
