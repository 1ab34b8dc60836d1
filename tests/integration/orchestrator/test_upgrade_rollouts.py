"""Upgrade rollouts over a fleet that already runs the app, on real NATS and PostgreSQL with the
real services and SIMULATED agents (fleet_harness.py): the plan is written in bounded chunks
(forced small here, so a dozen devices span several), the rollout completes, a rollback puts
each device back on its own previous version, and `get` pages through the devices."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

import sdv_client.rollout_cli
import sdv_orchestrator.domain.plan_events
from sdv_client.cli import app as sdv
from sdv_events.schemas.rollouts import (
    DevicesPlanned,
    GetRollout,
    PreviousPackages,
    RollbackStarted,
    RolloutPlanned,
    RolloutView,
)

pytestmark = pytest.mark.timeout(90)
APP = "upgrade-app"


async def largest_event(suite: Any) -> int:
    conn = await asyncpg.connect(suite.database_url)
    try:
        return await conn.fetchval(f"SELECT max(length(data)) FROM {suite.orchestrator_schema}.events")
    finally:
        await conn.close()


async def test_an_upgrade_over_a_fleet_on_two_versions_completes_and_rolls_each_device_back_to_its_own(
    suite: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdv_orchestrator.domain.plan_events, "CHUNK_ENTRIES", 3)
    # Given ten devices on 1.0.0, four of them since moved to 1.1.0, and two without the app …
    old_fleet = await suite.add_agents(10)
    v10 = await suite.publish(APP, "1.0.0")
    first = await suite.create(v10, selector="fleet=sim", kind="all-at-once")
    await suite.assert_clean_completion(first.rollout_id, [a.device_id for a in old_fleet], v10.digest, APP)
    moved = [a.device_id for a in old_fleet[:4]]
    v11 = await suite.publish(APP, "1.1.0")
    second = await suite.create(v11, device_ids=moved, kind="all-at-once")
    await suite.assert_clean_completion(second.rollout_id, moved, v11.digest, APP)
    newcomers = [a.device_id for a in await suite.add_agents(2, start=10)]
    devices = sorted(suite.agents)
    before = {d: v11 if d in moved else None if d in newcomers else v10 for d in devices}

    # … when 2.0.0 is rolled out to all twelve,
    v2 = await suite.publish(APP, "2.0.0")
    view = await suite.create(v2, selector="fleet=sim", waves=["2", "50%", "100%"])
    await suite.assert_clean_completion(view.rollout_id, devices, v2.digest, APP)

    # then the plan is a header and chunks, each previous version written once …
    events = await suite.events(view.rollout_id)
    (header,) = [e.data for e in events if isinstance(e.data, RolloutPlanned)]
    assert [len(w) for w in suite.plan_of(events)] == [2, 4, 6]
    assert (header.devices, header.waves, header.previous_packages) == (12, 3, 2)
    assert len([e for e in events if isinstance(e.data, DevicesPlanned)]) == 4
    table = [p for e in events if isinstance(e.data, PreviousPackages) for p in e.data.packages]
    assert sorted(p.version for p in table) == ["1.0.0", "1.1.0"]
    previous = suite.previous_of(events)
    assert {d: p and p.digest for d, p in previous.items()} == \
        {d: p and p.digest for d, p in before.items()}
    assert await largest_event(suite) < 64 * 1024

    # … and a rollback puts every device back on what it ran before, or removes the app.
    rolled = await suite.op("rollback", view.rollout_id, "field regression")
    assert rolled.status == "rolled_back"
    (rollback,) = [e.data for e in await suite.events(view.rollout_id)
                   if isinstance(e.data, RollbackStarted)]
    assert rollback.devices == 12

    async def restored() -> bool:
        docs = {d: await suite.desired(d) for d in devices}
        # A restored assignment names the rollout that rolled it back (issue 14).
        return all((APP not in docs[d].apps) if before[d] is None
                   else (docs[d].apps[APP].package.digest, docs[d].apps[APP].rollout_id,
                         docs[d].apps[APP].rollback) == (before[d].digest, view.rollout_id, True)
                   for d in devices)

    assert await suite.eventually(restored, timeout=20), {d: suite.agents[d].running for d in devices}
    for device_id in devices:
        agent = suite.agents[device_id]
        wanted = {} if before[device_id] is None else {APP: before[device_id].version}
        assert await suite.eventually(lambda a=agent, w=wanted: _async(a.running == w))
        assert agent.revisions == sorted(set(agent.revisions)), agent.revisions

    # Each device reports where the rollback left it (its own previous version running, or the
    # app removed): the rollback completes and every device shows it.
    async def rollback_completed() -> Any:
        shown = await suite.get(view.rollout_id)
        return shown if shown.rollback == "completed" else None

    final = await suite.eventually(rollback_completed, timeout=20)
    assert final, await suite.get(view.rollout_id)
    assert {d.device_id: d.status for d in final.devices} == dict.fromkeys(devices, "rolled_back")


async def test_get_pages_a_rollouts_devices_and_the_cli_reads_every_page(
    suite: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = await suite.add_agents(7)
    package = await suite.publish(APP, "1.0.0")
    view = await suite.create(package, selector="fleet=sim", kind="all-at-once")
    await suite.wait_status(view.rollout_id, "completed")
    pages = [await suite.commands.call("orchestrator", "get",
                                       GetRollout(rollout_id=view.rollout_id, offset=o, limit=3),
                                       RolloutView) for o in (0, 3, 6)]
    assert [len(p.devices) for p in pages] == [3, 3, 1]
    assert [d.device_id for p in pages for d in p.devices] == sorted(a.device_id for a in agents)
    assert {(p.devices_total, p.waves_total, p.succeeded_total) for p in pages} == {(7, 1, 7)}
    assert [len(p.waves) for p in pages] == [1, 0, 0]

    monkeypatch.setattr(sdv_client.rollout_cli, "MAX_PAGE", 2)
    result = await asyncio.to_thread(CliRunner().invoke, sdv, ["rollout", "get", view.rollout_id, "--json"],
                                     env={"SDV_NATS_URL": suite.url})
    assert result.exit_code == 0, result.stdout
    rollout = json.loads(result.stdout)["rollout"]
    assert Counter(d["status"] for d in rollout["devices"]) == {"succeeded": 7}
    assert rollout["devices_total"] == 7


async def _async(value: bool) -> bool:
    return value
