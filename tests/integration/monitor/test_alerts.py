"""Alerts as events, end to end on real servers: raised when a condition holds, resolved by
themselves when it clears, acknowledged by an operator (who is recorded), listed by the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from sdv_client.cli import app as sdv
from sdv_events.provisioning import REPORTED_BUCKET
from sdv_events.schemas.deployment import ReportedApp, ReportedState
from sdv_events.schemas.heartbeat import DeviceMetrics, Heartbeat
from sdv_events.service import Ping, ServiceHealth
from sdv_events.store import EventStore

pytestmark = pytest.mark.timeout(90)
APP = "alert-app"
FAST = dict(alert_every_s=0.3, alert_offline_after_s=1.0, alert_service_grace_s=1.0, alert_crash_restarts=3)


@pytest.fixture
async def suite(fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path, request: Any
                ) -> AsyncIterator[Any]:
    harness = request.getfixturevalue("load_harness_module")
    async with harness.running_suite(fresh_nats_url, database_url, schema, tmp_path,
                                     heartbeat_silence_s=1.5, heartbeats=False) as s:
        yield s


@pytest.fixture
async def monitor(suite: Any, schema: str, start_monitor_fn: Any) -> AsyncIterator[Any]:
    started = await start_monitor_fn(suite, f"{schema}_m", **FAST)
    yield started
    await started.http.aclose()
    with contextlib.suppress(Exception):
        await started.running.stop()


async def beat(suite: Any, device_id: str, seq: int, databroker: str | None = "127.0.0.1:55555") -> None:
    body = Heartbeat(device_id=device_id, seq=seq, sent_at=datetime.now(UTC), agent_version="sim",
                     desired_revision=0, apps={}, databroker=databroker,
                     device=DeviceMetrics(cpu_pct=1, mem_pct=1, mem_used_bytes=1, mem_total_bytes=2,
                                          disk_pct=1, disk_free_bytes=1))
    await suite.nc.publish(f"sdv.hb.{device_id}", msgspec.json.encode(body))


async def alerts(monitor: Any, state: str = "all") -> list[dict[str, Any]]:
    return (await monitor.get("/api/alerts", state=state))["items"]


async def test_a_silent_device_raises_an_offline_alert_that_resolves_when_it_is_back(suite: Any,
                                                                                     monitor: Any) -> None:
    (agent,) = await suite.add_agents(1)
    device = agent.device_id
    beating = True

    async def heartbeats() -> None:
        seq = 0
        while True:
            if beating:
                seq += 1
                await beat(suite, device, seq)
            await asyncio.sleep(0.3)

    task = asyncio.create_task(heartbeats())
    try:
        async def online() -> bool:
            response = await monitor.http.get(f"/api/devices/{device}")
            return response.status_code == 200 and response.json()["device"]["online"]

        await monitor.until(online, 15.0, "the device online")
        beating = False  # the agent is killed

        async def raised() -> Any:
            found = [a for a in await alerts(monitor, "active") if a["kind"] == "device_offline"]
            return found[0] if found else None

        alert = await monitor.until(raised, 20.0, "an offline alert")
        assert (alert["subject"], alert["device_id"], alert["state"]) == (device, device, "open")
        beating = True  # the agent is back

        async def resolved() -> Any:
            found = [a for a in await alerts(monitor) if a["alert_id"] == alert["alert_id"]]
            return found[0] if found and found[0]["state"] == "resolved" else None

        done = await monitor.until(resolved, 20.0, "the offline alert resolved by itself")
        assert done["resolution"] == "the condition cleared"
    finally:
        task.cancel()


async def test_a_crash_looping_app_and_a_rolled_back_rollout_raise_critical_alerts_that_an_operator_acks(
        suite: Any, monitor: Any, schema: str) -> None:
    agents = await suite.add_agents(2)
    device = agents[0].device_id
    # The agent reports its app restarting again and again (the reported-state document it writes).
    report = ReportedState(device_id=device, desired_revision=1, agent_version="sim",
                           apps={APP: ReportedApp(name=APP, version="1.0.0", digest="d" * 64, state="STARTING",
                                                  restarts=5, last_error="exit code 3")})
    kv = await suite.nc.jetstream().key_value(REPORTED_BUCKET)
    v1 = await suite.publish(APP, "1.0.0")
    first = await suite.create(v1, selector="fleet=sim", kind="all-at-once")
    await suite.wait_status(first.rollout_id, "completed")
    # 1.1.0 fails on one device: rolled back to 1.0.0, which both run again (a device whose app
    # a rollback removed would say so: it would not be running).
    v2 = await suite.publish(APP, "1.1.0")
    agents[1].script["1.1.0"] = "fail"
    rollout = await suite.create(v2, selector="fleet=sim", kind="all-at-once", error=0.1)
    await suite.wait_status(rollout.rollout_id, "rolled_back", "aborted")
    await kv.put(device, msgspec.json.encode(report))

    async def both() -> Any:
        found = {a["kind"]: a for a in await alerts(monitor, "active")}
        return found if {"app_crash_loop", "rollout_failed"} <= found.keys() else None

    found = await monitor.until(both, 20.0, "crash-loop and rollout alerts")
    assert found["app_crash_loop"]["subject"] == f"{device}/{APP}"
    assert found["rollout_failed"]["rollout_id"] == rollout.rollout_id
    assert all(a["severity"] == "critical" for a in found.values())

    result = await asyncio.to_thread(CliRunner().invoke, sdv, ["alerts", "ack", found["rollout_failed"]["alert_id"],
                                                               "--note", "looking", "--json"],
                                     env={"SDV_NATS_URL": suite.url})
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    assert doc["alert"]["state"] == "acknowledged"
    assert doc["alert"]["acknowledged_by"].startswith("cli:")
    again = await asyncio.to_thread(CliRunner().invoke, sdv, ["alerts", "ack", "rollout_failed-nope.1", "--json"],
                                    env={"SDV_NATS_URL": suite.url})
    assert again.exit_code == 1
    assert json.loads(again.stdout)["code"] == "not_found"

    # The crash loop clears when the app runs again: it resolves by itself.
    await kv.put(device, msgspec.json.encode(msgspec.structs.replace(report, apps={
        APP: msgspec.structs.replace(report.apps[APP], state="RUNNING", healthy=True)})))

    async def listed() -> Any:
        result = await asyncio.to_thread(CliRunner().invoke, sdv, ["alerts", "list", "--state", "all", "--json"],
                                         env={"SDV_NATS_URL": suite.url})
        states = {a["kind"]: a["state"] for a in json.loads(result.stdout)["alerts"]}
        return states if states.get("rollout_failed") == "acknowledged" and states.get(
            "app_crash_loop") == "resolved" else None

    await monitor.until(listed, 20.0, "acknowledged rollout alert, resolved crash loop (sdv alerts list)")
    # Alerts are events of the monitor's own store: raised, acknowledged (by whom), resolved.
    store = await EventStore.open(suite.database_url, f"{schema}_m")
    try:
        types = [e.type for sid in await store.stream_ids("alert") for e in await store.read_stream(sid)]
        acks = [e for sid in await store.stream_ids("alert") for e in await store.read_stream(sid)
                if e.type == "monitor.AlertAcknowledged.v1"]
    finally:
        await store.close()
    assert {"monitor.AlertRaised.v1", "monitor.AlertAcknowledged.v1", "monitor.AlertResolved.v1"} <= set(types)
    assert acks[0].actor
    assert acks[0].actor.startswith("cli:")


async def test_a_service_that_stops_answering_raises_an_alert_that_resolves_when_it_is_back(
        suite: Any, monitor: Any) -> None:
    (running,) = suite.orchestrators

    async def views_built() -> bool:
        # The monitor first builds its views from the services' stores (the orchestrator's
        # history among them); its consumer counts what is pending once that is done. Stopping
        # the orchestrator before would hold the build, and every view, until it is back.
        health = await suite.commands.call("monitor", "ping", Ping(), ServiceHealth)
        views = next((t for t in health.tasks if t.name == "monitor_views"), None)
        return views is not None and "pending" in views.detail

    await monitor.until(views_built, 20.0, "the monitor's views built")
    await suite.stop_orchestrator(running)

    async def raised() -> Any:
        found = [a for a in await alerts(monitor, "active") if a["kind"] == "service_unhealthy"]
        return found[0] if found else None

    alert = await monitor.until(raised, 20.0, "a service alert")
    assert alert["subject"] == "orchestrator"
    assert "ping" in alert["message"]
    await suite.start_orchestrator()

    async def resolved() -> bool:
        return any(a["alert_id"] == alert["alert_id"] and a["state"] == "resolved" for a in await alerts(monitor))

    await monitor.until(resolved, 20.0, "the service alert resolved")


async def test_a_device_whose_databroker_is_unreachable_raises_an_alert_until_it_is_back(
        suite: Any, monitor: Any) -> None:
    (agent,) = await suite.add_agents(1)  # its capabilities say a KUKSA databroker is present
    device = agent.device_id
    broker: str | None = None  # the agent's heartbeats say it cannot reach the databroker

    async def heartbeats() -> None:
        seq = 0
        while True:
            seq += 1
            await beat(suite, device, seq, databroker=broker)
            await asyncio.sleep(0.3)

    task = asyncio.create_task(heartbeats())
    try:
        async def raised() -> Any:
            found = [a for a in await alerts(monitor, "active") if a["kind"] == "databroker_unreachable"]
            return found[0] if found else None

        alert = await monitor.until(raised, 20.0, "a databroker alert")
        assert alert["device_id"] == device
        assert "KUKSA" in alert["message"]
        broker = "127.0.0.1:55555"

        async def resolved() -> bool:
            return any(a["alert_id"] == alert["alert_id"] and a["state"] == "resolved"
                       for a in await alerts(monitor))

        await monitor.until(resolved, 20.0, "the databroker alert resolved")
    finally:
        task.cancel()
