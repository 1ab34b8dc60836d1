"""Policies start rollouts with no operator action; the `sdv rollout|devices|policy` CLI drives
the real services. SIMULATED agents (see fleet_harness.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner

from sdv_client.cli import app as sdv
from sdv_events.codec import decode_envelope
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.schemas.packages import PackagePublished
from sdv_events.schemas.rollouts import ListRollouts, RolloutList, RolloutPolicy, Strategy, Target


async def cli(suite: Any, *args: str) -> Any:
    result = await asyncio.to_thread(CliRunner().invoke, sdv, [*args, "--json"],
                                     env={"SDV_NATS_URL": suite.url})
    doc = json.loads(result.stdout)
    return result.exit_code, doc


async def rollouts_of(suite: Any, app: str) -> list[Any]:
    found = await suite.commands.call("orchestrator", "list", ListRollouts(app=app), RolloutList)
    return found.rollouts


async def test_policy_rolls_out_a_version_published_on_its_channel_with_no_operator_action(suite) -> None:
    agents = await suite.add_agents(5, prefix="pol", labels={"env": "prod"})
    policy = RolloutPolicy(name="prod-canary", app="auto-app", channel="dev",
                           target=Target(selector="env=prod"), strategy=Strategy("canary", ["1", "100%"]))
    await suite.commands.call("orchestrator", "set_policy", policy, RolloutPolicy)
    package = await suite.publish("auto-app", "1.0.0")  # lands on channel dev: the policy fires

    async def completed() -> Any:
        found = await rollouts_of(suite, "auto-app")
        return found if found and found[0].status == "completed" else None

    done = await suite.eventually(completed, timeout=30)
    assert done, await rollouts_of(suite, "auto-app")
    assert len(done) == 1
    assert (done[0].version, done[0].devices, done[0].succeeded) == ("1.0.0", 5, 5)
    for agent in agents:
        desired = await suite.desired(agent.device_id)
        assert desired.apps["auto-app"].package.digest == package.digest
    # The policy acted, caused by the package's publication (its event on the bus).
    created = (await suite.events(done[0].rollout_id))[0]
    published = decode_envelope((await suite.nc.jetstream().get_last_msg(
        EVENTS_STREAM, "sdv.evt.package.auto-app.PackagePublished")).data)
    assert isinstance(published.data, PackagePublished)
    assert (created.actor, created.causation_id) == ("policy:prod-canary", str(published.event_id))

    # A newly accepted device the selector picks gets the fleet's version on its own.
    [late] = await suite.add_agents(1, prefix="late", labels={"env": "prod"})

    async def assigned() -> Any:
        desired = await suite.desired(late.device_id)
        return desired if desired and "auto-app" in desired.apps else None

    desired = await suite.eventually(assigned, timeout=30)
    assert desired, "the new device never got the fleet's version"
    assert desired.apps["auto-app"].package.version == "1.0.0"


async def test_cli_creates_watches_and_lists_a_rollout_and_manages_devices_and_policies(suite) -> None:
    agents = await suite.add_agents(3, prefix="cli", labels={"fleet": "cli"})
    await suite.publish("cli-app", "2.0.0")
    code, doc = await cli(suite, "rollout", "create", "cli-app", "2.0.0", "--selector", "fleet=cli",
                          "--waves", "1,100%", "--watch")
    assert code == 0, doc
    assert doc["rollout"]["status"] == "completed"
    assert [w["size"] for w in doc["rollout"]["waves"]] == [1, 2]
    rollout_id = doc["rollout"]["rollout_id"]
    code, doc = await cli(suite, "rollout", "list", "--app", "cli-app")
    assert code == 0
    assert [r["rollout_id"] for r in doc["rollouts"]] == [rollout_id]
    code, doc = await cli(suite, "rollout", "get", "no-such-rollout")
    assert code == 1
    assert doc["code"] == "not_found"

    code, doc = await cli(suite, "devices", "list", "--selector", "fleet=cli")
    assert code == 0
    assert sorted(d["device_id"] for d in doc["devices"]) == sorted(a.device_id for a in agents)
    code, doc = await cli(suite, "devices", "label", agents[0].device_id, "ring=canary")
    assert code == 0
    assert doc["device"]["labels"]["ring"] == "canary"

    async def canary_listed() -> Any:  # the list reads a projection: it catches up shortly
        _, doc = await cli(suite, "devices", "list", "--selector", "fleet=cli,ring=canary")
        return [d["device_id"] for d in doc["devices"]] or None

    assert await suite.eventually(canary_listed) == [agents[0].device_id]

    code, doc = await cli(suite, "policy", "set", "cli-policy", "--app", "cli-app", "--channel", "stable",
                          "--selector", "fleet=cli")
    assert code == 0
    code, doc = await cli(suite, "policy", "list")
    assert [p["name"] for p in doc["policies"]] == ["cli-policy"]
    code, doc = await cli(suite, "policy", "delete", "cli-policy")
    assert code == 0
    code, doc = await cli(suite, "policy", "delete", "cli-policy")
    assert code == 1
