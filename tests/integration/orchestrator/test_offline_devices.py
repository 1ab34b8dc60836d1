"""A fleet with 20 % of its devices offline (no heartbeat: the registry counts them offline):
the rollout shows them from the start ("waiting: offline", planned after the online ones) and
ends as its `offline` option says — skip: completed, the offline ones reported apart; wait:
running until they are back, then completed; fail: counted as failures, aborted and rolled
back. Real packager, registry (presence from heartbeats) and orchestrator; SIMULATED agents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from typer.testing import CliRunner

from sdv_client.cli import app as sdv

pytestmark = pytest.mark.timeout(120)
APP = "offline-app"
OFFLINE = ["sim-00", "sim-01"]  # first by id: planned last all the same
DEVICE_S = 6.0


@pytest.fixture
async def fleet(make_suite: Any) -> AsyncIterator[Any]:
    """Ten heartbeating devices, two of which then go silent until the registry (1.5 s of
    silence) counts them offline."""
    async with make_suite(heartbeat_silence_s=1.5) as suite:
        await suite.add_agents(10)
        for device_id in OFFLINE:
            await suite.agents[device_id].go_offline()
        await suite.wait_presence(OFFLINE, online=False)
        yield suite


async def started(suite: Any, option: str) -> Any:
    package = await suite.publish(APP, "1.0.0")
    gate = asyncio.Event()  # the online devices answer once the start has been looked at
    for agent in suite.agents.values():
        agent.gate = gate
    view = await suite.create(
        package, selector="fleet=sim", waves=["1", "50%", "100%"], device_s=DEVICE_S, offline=option
    )
    # From the start: counted apart and listed, in the last wave.
    assert view.offline_total == 2, view
    assert [w.offline for w in view.waves] == [0, 0, 2]
    assert {d.device_id: d.status for d in view.devices if d.device_id in OFFLINE} == dict.fromkeys(
        OFFLINE, "waiting_offline"
    )
    waves = suite.plan_of(await suite.events(view.rollout_id))
    assert set(OFFLINE) <= set(waves[-1])
    assert not set(OFFLINE) & set(waves[0] + waves[1])
    # … and as an operator reads it.
    shown = await asyncio.to_thread(
        CliRunner().invoke,
        sdv,
        ["rollout", "get", view.rollout_id],
        env={"SDV_NATS_URL": suite.url, "SDV_NATS_CREDS": "", "SDV_NATS_CA": "", "COLUMNS": "200"},
    )
    assert shown.exit_code == 0, shown.stdout
    assert f"waiting: offline 2, skipped offline 0 (offline devices: {option})" in shown.stdout
    assert shown.stdout.count("waiting_offline") == 2
    gate.set()
    return view


async def test_offline_skip_completes_with_the_offline_devices_reported_apart(fleet: Any) -> None:
    view = await started(fleet, "skip")
    done = await fleet.wait_status(view.rollout_id, "completed", "rolled_back", "aborted", timeout=40)
    assert done.status == "completed", done.reason
    assert (done.succeeded_total, done.failed_total, done.skipped_total) == (8, 0, 2)
    statuses = {d.device_id: d.status for d in done.devices}
    assert {statuses[d] for d in OFFLINE} == {"skipped_offline"}
    # Their document stays: they take the version when they come back.
    for device_id in OFFLINE:
        doc = await fleet.desired(device_id)
        assert doc.apps[APP].package.version == "1.0.0"


async def test_offline_wait_holds_the_rollout_until_they_are_back(fleet: Any) -> None:
    view = await started(fleet, "wait")

    async def online_ones_done() -> Any:
        shown = await fleet.get(view.rollout_id)
        return shown if shown.succeeded_total == 8 else None

    assert await fleet.eventually(online_ones_done, timeout=30)
    await asyncio.sleep(DEVICE_S + 1.5)  # past the last wave's deadline and its skew tolerance
    waiting = await fleet.get(view.rollout_id)
    assert waiting.status == "running"
    assert {d.status for d in waiting.devices if d.device_id in OFFLINE} == {"waiting_offline"}
    assert waiting.offline_total == 2

    for device_id in OFFLINE:
        await fleet.agents[device_id].come_online()
    done = await fleet.wait_status(view.rollout_id, "completed", "rolled_back", "aborted", timeout=40)
    assert (done.status, done.succeeded_total, done.skipped_total) == ("completed", 10, 0), done


async def test_offline_fail_counts_them_as_failures_and_rolls_back(fleet: Any) -> None:
    view = await started(fleet, "fail")
    done = await fleet.wait_status(view.rollout_id, "rolled_back", "completed", timeout=40)
    assert done.status == "rolled_back"
    assert "wave 3" in done.reason
    # The first offline device at its deadline is one failure of five in wave 3: over 5 %.
    reasons = {d.device_id: d.reason for d in done.devices}
    assert any(reasons[d] == "was failed: offline at its deadline" for d in OFFLINE), reasons

    # The rollback is followed to its end: the online devices report the app removed (they had
    # none before); the offline ones cannot say, so they stay unconfirmed.
    async def rollback_completed() -> Any:
        shown = await fleet.get(view.rollout_id)
        return shown if shown.rollback == "completed" else None

    final = await fleet.eventually(rollback_completed, timeout=30)
    assert final, await fleet.get(view.rollout_id)
    assert (final.rolled_back_total, final.rollback_unconfirmed_total) == (8, 2)
    statuses = {d.device_id: d.status for d in final.devices}
    assert {statuses[d] for d in OFFLINE} == {"rollback_unconfirmed"}
