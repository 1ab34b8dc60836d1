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
