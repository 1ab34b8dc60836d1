"""Devices that already run the version a rollout asks for (after a rollout of it, or after a
rollback left them on it) finish at once as successes with reason `already_current`, instead of
timing out and rolling a healthy fleet back. Real packager, registry and orchestrator; SIMULATED
agents that answer a document naming the digest they run with `agent.AppAlreadyCurrent`, as the
edge agent's contract says (issue 14; the real agent's end-to-end test comes with it)."""

from __future__ import annotations

import time
from typing import Any

from sdv_events.schemas.rollouts import DeviceSucceeded, DeviceTimedOut

APP = "current-app"


async def test_a_rollout_of_the_version_devices_already_run_succeeds_at_once(suite: Any) -> None:
    agents = await suite.add_agents(3, prefix="cur", labels={"fleet": "cur"})
    v1 = await suite.publish(APP, "1.0.0")
    first = await suite.create(v1, selector="fleet=cur", kind="all-at-once")
    await suite.wait_status(first.rollout_id, "completed")

    started = time.monotonic()
    again = await suite.create(v1, selector="fleet=cur", kind="all-at-once", device_s=30)
    done = await suite.wait_status(again.rollout_id, "completed", "rolled_back", "aborted", timeout=10)
    took = time.monotonic() - started
    assert done.status == "completed", done.reason
    assert took < 2.0, f"took {took:.1f}s: devices were not finished at once"
    assert {d.status for d in done.devices} == {"already_current"}
    assert (done.succeeded_total, done.already_current_total) == (3, 3)
    events = [e.data for e in await suite.events(again.rollout_id)]
    assert {d.reason for d in events if isinstance(d, DeviceSucceeded)} == {"already_current"}
    assert not [d for d in events if isinstance(d, DeviceTimedOut)]
    assert all(a.facts[-1] == ("AppAlreadyCurrent", "1.0.0", again.rollout_id) for a in agents)


async def test_after_a_rollback_a_rollout_of_the_version_it_left_devices_on_succeeds_at_once(
    suite: Any,
) -> None:
    agents = await suite.add_agents(2, prefix="rb", labels={"fleet": "rb"})
    v1 = await suite.publish(APP, "1.0.0")
    first = await suite.create(v1, selector="fleet=rb", kind="all-at-once")
    await suite.wait_status(first.rollout_id, "completed")
    v2 = await suite.publish(APP, "2.0.0")
    for agent in agents:
        agent.script["2.0.0"] = "fail"
    failing = await suite.create(v2, selector="fleet=rb", kind="all-at-once", error=0.0)
    rolled = await suite.wait_status(failing.rollout_id, "rolled_back")
    assert rolled.status == "rolled_back"

    # The operator rolls 1.0.0 out again, as after a manual rollback: nothing to wait for.
    started = time.monotonic()
    again = await suite.create(v1, selector="fleet=rb", kind="all-at-once", device_s=30)
    done = await suite.wait_status(again.rollout_id, "completed", "rolled_back", timeout=10)
    assert (done.status, done.already_current_total) == ("completed", 2), done
    assert time.monotonic() - started < 2.0
