"""`sdv devices get` shows the device's apps and history from the monitor; `sdv status` the
fleet on one screen; with the monitor down, `devices get` still shows the registry's part."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from sdv_client.cli import app as sdv

pytestmark = pytest.mark.timeout(60)
APP = "cli-watch"


async def cli(suite: Any, *args: str) -> tuple[int, Any, str]:
    result = await asyncio.to_thread(CliRunner().invoke, sdv, [*args], env={"SDV_NATS_URL": suite.url})
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError:
        doc = None
    return result.exit_code, doc, result.stdout


async def test_devices_get_shows_inventory_and_history_and_status_shows_the_fleet(suite: Any,
                                                                                  monitor: Any) -> None:
    agents = await suite.add_agents(3)
    v1 = await suite.publish(APP, "2.0.0")
    done = await suite.create(v1, selector="fleet=sim", kind="all-at-once")
    await suite.wait_status(done.rollout_id, "completed")
    device = agents[0].device_id

    async def shown() -> Any:
        code, doc, _ = await cli(suite, "devices", "get", device, "--json")
        apps = (doc or {}).get("inventory") or {}
        return doc if code == 0 and [a["state"] for a in apps.get("apps", [])] == ["RUNNING"] else None

    doc = await monitor.until(shown, 15.0, "sdv devices get shows the app running")
    (app,) = doc["inventory"]["apps"]
    assert (app["app"], app["installed_version"], app["desired_version"]) == (APP, "2.0.0", "2.0.0")
    assert app["desired_rollout"] == done.rollout_id
    assert doc["device"]["status"] == "accepted"
    assert any("healthy" in h["summary"] for h in doc["inventory"]["history"])

    code, text_doc, text = await cli(suite, "devices", "get", device)
    assert code == 0
    assert text_doc is None
    assert APP in text
    assert "RUNNING" in text
    assert "recent history" in text

    code, status, _ = await cli(suite, "status", "--json")
    assert code == 0
    assert (status["status"]["devices"], status["status"]["apps_by_state"]) == (3, {"RUNNING": 3})

    await monitor.running.stop()
    code, doc, _ = await cli(suite, "devices", "get", device, "--json")
    assert code == 0
    assert doc["device"]["device_id"] == device
    assert doc["inventory"] is None
    assert doc["inventory_error"]
    code, doc, _ = await cli(suite, "status", "--json")
    assert code == 3
    assert doc["ok"] is False


async def test_audit_of_a_rollout_lists_every_event_in_order_with_device_facts(suite: Any,
                                                                                monitor: Any) -> None:
    agents = await suite.add_agents(3)
    v1 = await suite.publish(APP, "3.0.0")
    done = await suite.create(v1, selector="fleet=sim", waves=["1", "100%"])
    await suite.wait_status(done.rollout_id, "completed")
    stored = await suite.events(done.rollout_id)  # the orchestrator's own store

    async def complete() -> Any:
        code, doc, _ = await cli(suite, "audit", "--rollout", done.rollout_id, "--json")
        facts = [e for e in (doc or {}).get("events", []) if e["service"] == "device"]
        orchestrator = [e for e in (doc or {}).get("events", []) if e["service"] == "orchestrator"]
        return doc if code == 0 and len(facts) >= 3 and len(orchestrator) == len(stored) else None

    doc = await monitor.until(complete, 15.0, "the audit trail has the rollout and its facts")
    events = doc["events"]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    orchestrator = [e for e in events if e["service"] == "orchestrator"]
    assert [e["event_id"] for e in orchestrator] == [str(e.event_id) for e in stored]
    assert orchestrator[0]["type"] == "orchestrator.RolloutCreated.v1"
    assert orchestrator[0]["actor"]
    assert orchestrator[0]["causation_id"]
    assert orchestrator[0]["package"] == APP
    facts = [e for e in events if e["service"] == "device"]
    assert {e["device_id"] for e in facts} == {a.device_id for a in agents}
    assert all(e["type"] == "agent.AppHealthy.v1" and e["stream_id"] == f"agent-{e['device_id']}"
               and e["actor"] == f"device:{e['device_id']}" and e["causation_id"] for e in facts)
    succeeded = [e for e in orchestrator if e["type"].endswith("DeviceSucceeded.v1")]
    assert {e["data"]["fact_id"] for e in succeeded} <= {e["causation_id"] for e in facts}

    code, _, text = await cli(suite, "audit", "--device", agents[0].device_id, "--jsonl")
    lines = [json.loads(line) for line in text.splitlines()]
    assert code == 0
    assert lines
    assert all(e["device_id"] == agents[0].device_id for e in lines)
    assert {"registry.DeviceAccepted.v1", "orchestrator.DeviceTargeted.v1", "agent.AppHealthy.v1"} <= {
        e["type"] for e in lines}

    code, doc, _ = await cli(suite, "audit", "--type", "DeviceTargeted", "--limit", "2", "--json")
    assert code == 0
    assert len(doc["events"]) == 2
    assert doc["next_after"]
    code, doc2, _ = await cli(suite, "audit", "--type", "DeviceTargeted", "--after", doc["next_after"],
                              "--json")
    assert code == 0
    assert len(doc2["events"]) == 1

    response = await monitor.http.get("/api/audit", params={"rollout": done.rollout_id, "limit": "5"})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 5
    for bad in ({"limit": "0"}, {"since": "yesterday"}, {"after": "nonsense"}, {"bogus": "1"},
                {"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"}):
        response = await monitor.http.get("/api/audit", params=bad)
        assert response.status_code == 422, (bad, response.text)


async def test_audit_verify_finds_an_edited_event_in_a_services_store(suite: Any, monitor: Any) -> None:
    import asyncpg

    await suite.add_agents(2)
    v1 = await suite.publish(APP, "4.0.0")
    done = await suite.create(v1, selector="fleet=sim", kind="all-at-once")
    await suite.wait_status(done.rollout_id, "completed")
    code, doc, _ = await cli(suite, "audit", "verify", "--json")
    assert code == 0
    assert doc["ok"] is True
    for store, report in doc["stores"].items():
        assert report["problems"] == [], (store, report["problems"])
        # (the monitor's own store may not have recorded the facts yet: it follows the bus)
        assert report["events"] > 0 or store == "monitor", (store, report)

    victim = (await suite.events(done.rollout_id))[0]  # RolloutCreated: who asked for what
    conn = await asyncpg.connect(suite.database_url)
    try:
        async with conn.transaction():
            table = f"{suite.orchestrator_schema}.events"
            await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            await conn.execute(f"UPDATE {table} SET metadata = $1 WHERE event_id = $2",
                               b'{"actor":"cli:someone-else"}', victim.event_id)
            await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    finally:
        await conn.close()
    code, doc, _ = await cli(suite, "audit", "verify", "--json")
    assert code == 1
    assert doc["ok"] is False
    (problem,) = doc["stores"]["orchestrator"]["problems"]
    assert (problem["stream_id"], problem["version"], problem["kind"], problem["event_id"]) == (
        f"rollout-{done.rollout_id}", 1, "altered", str(victim.event_id))
    assert all(not r["problems"] for s, r in doc["stores"].items() if s != "orchestrator")


async def test_audit_replay_folds_a_rollout_in_a_fresh_process_and_equals_the_live_view(
        suite: Any, monitor: Any) -> None:
    agents = await suite.add_agents(4)
    v1 = await suite.publish(APP, "5.0.0")
    agents[3].script["5.0.0"] = "fail"
    done = await suite.create(v1, selector="fleet=sim", waves=["1", "100%"], error=0.5)
    await suite.wait_status(done.rollout_id, "completed", "rolled_back", "aborted")
    code, doc, _ = await cli(suite, "audit", "replay", "--rollout", done.rollout_id, "--json")
    assert code == 0, doc
    assert doc["equal"] is True
    assert doc["differences"] == []
    assert doc["events"] == len(
        await suite.events(done.rollout_id))
    code, doc, _ = await cli(suite, "audit", "replay", "--rollout", "r-never-was", "--json")
    assert code == 1
    assert "no events" in doc["error"]
