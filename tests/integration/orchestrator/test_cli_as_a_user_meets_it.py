"""The `sdv` CLI on the real services (SIMULATED agents, see fleet_harness.py), as a user meets it:
a watched rollout that fails makes the command fail, pending devices are accepted in bulk and a
selector is labelled at once, and piped tables keep every id whole."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from sdv_client.cli import app as sdv
from sdv_events import enrolment
from sdv_events.auth import Role, new_keypair
from sdv_events.schemas.devices import DeviceList, ListDevices

SDV = Path(sys.executable).with_name("sdv")


async def cli(suite: Any, *args: str) -> tuple[int, Any, str]:
    result = await asyncio.to_thread(CliRunner().invoke, sdv, list(args),
                                     env={"SDV_NATS_URL": suite.url, "SDV_NATS_CREDS": "", "SDV_NATS_CA": ""})
    doc = json.loads(result.stdout) if "--json" in args else None
    return result.exit_code, doc, result.stdout + result.stderr


async def test_watching_a_rollout_that_aborts_and_rolls_back_exits_non_zero(suite: Any) -> None:
    agents = await suite.add_agents(2, prefix="wf", labels={"fleet": "wf"})
    await suite.publish("wf-app", "1.0.0")
    code, doc, _ = await cli(suite, "rollout", "create", "wf-app", "1.0.0", "--selector", "fleet=wf",
                             "--waves", "100%", "--watch", "--json")
    assert (code, doc["ok"], doc["rollout"]["status"]) == (0, True, "completed")
    for agent in agents:
        agent.script["2.0.0"] = "fail"
    await suite.publish("wf-app", "2.0.0")

    code, doc, _ = await cli(suite, "rollout", "create", "wf-app", "2.0.0", "--selector", "fleet=wf",
                             "--waves", "1,100%", "--error", "0.0", "--watch", "--json")
    assert code == 1, doc
    assert doc["ok"] is False
    assert doc["rollout"]["status"] in ("aborted", "rolled_back")
    assert doc["code"] == f"rollout_{doc['rollout']['status']}"
    rollout_id = doc["rollout"]["rollout_id"]
    await suite.wait_status(rollout_id, "rolled_back")

    code, doc, _ = await cli(suite, "rollout", "watch", rollout_id, "--json")
    assert (code, doc["ok"], doc["code"]) == (1, False, "rollout_rolled_back")
    code, _, text = await cli(suite, "rollout", "watch", rollout_id)
    assert code == 1
    assert f"rollout {rollout_id} ended rolled back" in text
    # A cancelled one is no success either.
    await suite.publish("wf-app", "3.0.0")
    code, doc, _ = await cli(suite, "rollout", "create", "wf-app", "3.0.0", "--selector", "fleet=wf",
                             "--no-start", "--json")
    assert code == 0, doc
    cancelled = doc["rollout"]["rollout_id"]
    code, _, _ = await cli(suite, "rollout", "cancel", cancelled, "--json")
    assert code == 0
    code, doc, _ = await cli(suite, "rollout", "watch", cancelled, "--json")
    assert (code, doc["code"]) == (1, "rollout_cancelled")


async def announce_pending(suite: Any, device_id: str) -> None:
    """A device with no pre-authorisation: the registry keeps it pending."""
    capabilities = sys.modules["sdv_orchestrator_fleet_harness"].capabilities()  # conftest loaded it
    answer = await enrolment.announce(suite.nc, new_keypair(Role.USER), device_id, capabilities, timeout=10)
    assert answer.status == "pending", answer


async def test_pending_devices_are_accepted_in_bulk_and_a_selector_labelled_at_once(suite: Any) -> None:
    for device_id in ("bulk-00", "bulk-01", "bulk-02"):
        await announce_pending(suite, device_id)
    for device_id in ("bulk-00", "bulk-01"):
        code, _, _ = await cli(suite, "devices", "label", device_id, "site=north", "--json")
        assert code == 0

    async def labelled() -> bool:  # the registry's read model follows its events shortly
        page = await suite.commands.call("registry", "list", ListDevices(selector="site=north"), DeviceList)
        return sorted(d.device_id for d in page.devices) == ["bulk-00", "bulk-01"]

    assert await suite.eventually(labelled)
    code, doc, _ = await cli(suite, "devices", "accept", "--selector", "site=north", "--json")
    assert (code, doc["ok"], sorted(doc["accepted"]), doc["refused"]) == (0, True, ["bulk-00", "bulk-01"], {})
    async def accepted(devices: list[str]) -> bool:
        page = await suite.commands.call("registry", "list", ListDevices(status="accepted"), DeviceList)
        return set(devices) <= {d.device_id for d in page.devices}

    assert await suite.eventually(lambda: accepted(["bulk-00", "bulk-01"]))
    code, doc, _ = await cli(suite, "devices", "accept", "--all-pending", "--json")
    assert (code, doc["accepted"]) == (0, ["bulk-02"])
    assert await suite.eventually(lambda: accepted(["bulk-02"]))
    code, doc, _ = await cli(suite, "devices", "accept", "--all-pending", "--json")
    assert (code, doc["accepted"]) == (0, [])  # nothing left: not an error

    code, doc, _ = await cli(suite, "devices", "label", "--selector", "site=north", "ring=canary",
                             "--remove", "site", "--json")
    assert (code, sorted(doc["labelled"])) == (0, ["bulk-00", "bulk-01"])

    async def relabelled() -> bool:
        page = await suite.commands.call("registry", "list", ListDevices(selector="ring=canary"), DeviceList)
        return sorted(d.device_id for d in page.devices) == ["bulk-00", "bulk-01"] and all(
            d.status == "accepted" and "site" not in d.labels for d in page.devices)

    assert await suite.eventually(relabelled)


async def test_piped_tables_keep_every_id_whole(suite: Any) -> None:
    long_prefix = "a-device-with-a-rather-long-identifier"
    await suite.add_agents(2, prefix=long_prefix, labels={"fleet": "wide"})
    await suite.publish("wide-app", "1.0.0")
    code, doc, _ = await cli(suite, "rollout", "create", "wide-app", "1.0.0", "--selector", "fleet=wide",
                             "--waves", "100%", "--watch", "--json")
    assert code == 0, doc
    rollout_id = doc["rollout"]["rollout_id"]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= {"SDV_NATS_URL": suite.url, "SDV_NATS_CREDS": "", "SDV_NATS_CA": ""}

    def piped(*args: str) -> str:
        done = subprocess.run([str(SDV), *args], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = await asyncio.to_thread(piped, "rollout", "list")
    assert rollout_id in listed
    assert "…" not in listed
    devices = await asyncio.to_thread(piped, "devices", "list", "--selector", "fleet=wide")
    assert f"{long_prefix}-00" in devices
    assert f"{long_prefix}-01" in devices
    packages = await asyncio.to_thread(piped, "package", "list", "--name", "wide-app")
    digest = (await suite.packages.get("wide-app", "1.0.0")).info.digest
    assert digest in packages  # whole when piped (shortened on a terminal unless --wide)
