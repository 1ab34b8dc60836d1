"""Rollouts end to end with SIMULATED agents (tests/integration/orchestrator/fleet_harness.py):
real NATS, real PostgreSQL, the real packager, registry and orchestrator services in-process;
the agents only watch their desired state and answer with facts. Every wait is a bounded poll."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

import pytest

from sdv_events.bus import Conflict, NotFound, Rejected
from sdv_events.schemas.devices import Kuksa
from sdv_events.schemas.rollouts import (
    DeviceFailed,
    DeviceRolledBack,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    ListRollouts,
    RollbackCompleted,
    RollbackStarted,
    RolloutList,
    WaveStarted,
)

pytestmark = pytest.mark.timeout(30)
APP = "fleet-app"


def bodies(events: list[Any], kind: type) -> list[Any]:
    return [e.data for e in events if isinstance(e.data, kind)]


async def test_simulated_canary_to_20_agents_all_healthy_completes_on_the_new_version(suite: Any) -> None:
    agents = await suite.add_agents(20)
    v1 = await suite.publish(APP, "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", waves=["1", "10%", "50%", "100%"])
    assert view.status == "running"
    assert [w.size for w in view.waves] == [1, 1, 8, 10]
    done = await suite.wait_status(view.rollout_id, "completed")
    assert [(w.succeeded, w.failed, w.state) for w in done.waves] == [
        (1, 0, "completed"), (1, 0, "completed"), (8, 0, "completed"), (10, 0, "completed")]
    assert Counter(d.status for d in done.devices) == {"succeeded": 20}
    for agent in agents:
        doc = await suite.desired(agent.device_id)
        assert doc is not None
        assert (doc.apps[APP].package.version, doc.apps[APP].package.digest) == ("1.0.0", v1.digest)
        assert agent.running == {APP: "1.0.0"}
    events = await suite.events(view.rollout_id)
    assert sorted(b.device_id for b in bodies(events, DeviceTargeted)) == sorted(suite.agents)
    assert sorted(b.device_id for b in bodies(events, DeviceSucceeded)) == sorted(suite.agents)
    # Each decision names the agent's fact it rests on: the history stands without the bus.
    assert all(b.fact_id is not None and b.observed_at is not None
               for b in bodies(events, DeviceSucceeded))
    assert len({b.fact_id for b in bodies(events, DeviceSucceeded)}) == 20


async def test_simulated_failures_above_threshold_in_wave_2_abort_and_roll_waves_1_2_back(suite: Any) -> None:
    agents = await suite.add_agents(20)
    old = await suite.publish(APP, "1.0.0")
    first = await suite.create(old, selector="fleet=sim", kind="all-at-once")
    await suite.wait_status(first.rollout_id, "completed")

    new = await suite.publish(APP, "1.1.0")
    failing = {"sim-03", "sim-05", "sim-07"}  # wave 2 is sim-02 … sim-09 (ids sorted)
    for agent in agents:
        if agent.device_id in failing:
            agent.script["1.1.0"] = "fail"
    view = await suite.create(new, selector="fleet=sim", waves=["2", "50%", "100%"],
                              success=0.75, error=0.2)
    aborted = await suite.wait_status(view.rollout_id, "rolled_back", "aborted", "completed")
    assert aborted.status == "rolled_back"
    # Two failures of eight cross 20 %; the third counts too when it came in the same batch.
    assert re.match(r"wave 2: [23] of 8 devices failed, more than the 20% error", aborted.reason), \
        aborted.reason
    assert [w.state for w in aborted.waves] == ["completed", "aborted", "waiting"]

    events = await suite.events(view.rollout_id)
    waves = suite.plan_of(events)
    assert waves == [["sim-00", "sim-01"], [f"sim-{i:02d}" for i in range(2, 10)],
                     [f"sim-{i:02d}" for i in range(10, 20)]]
    touched = set(waves[0]) | set(waves[1])
    assert {b.device_id for b in bodies(events, DeviceTargeted)} == touched
    assert [b.wave for b in bodies(events, WaveStarted)] == [0, 1]
    failed = bodies(events, DeviceFailed)
    assert len(failed) in (2, 3)
    assert {b.device_id for b in failed} <= failing
    (rollback,) = bodies(events, RollbackStarted)
    assert rollback.devices == len(touched)
    assert {suite.previous_of(events)[d].digest for d in touched} == {old.digest}

    async def rolled_back() -> bool:
        # The restored assignment names the rollout that rolled it back: the device's facts
        # about it are that rollout's (issue 14).
        docs = {d: await suite.desired(d) for d in touched}
        return all(doc.apps[APP].package.digest == old.digest
                   and (doc.apps[APP].rollout_id, doc.apps[APP].rollback) == (view.rollout_id, True)
                   for doc in docs.values())

    assert await suite.eventually(rolled_back), {d: suite.agents[d].running for d in touched}
    for device_id in touched:
        agent = suite.agents[device_id]
        assert await suite.eventually(lambda a=agent: _async(a.running == {APP: "1.0.0"}))
        assert "1.1.0" in agent.versions_seen(APP)
        assert agent.revisions == sorted(set(agent.revisions)), agent.revisions
    for device_id in waves[2]:  # wave 3 never touched: still the first rollout's document
        agent = suite.agents[device_id]
        assert agent.versions_seen(APP) == ["1.0.0"]
        doc = await suite.desired(device_id)
        assert (doc.revision, doc.apps[APP].rollout_id) == (1, first.rollout_id)
    # Every touched device reports its previous version again: the rollback completes, and
    # each device shows it (none stays `targeted`).
    async def rollback_completed() -> Any:
        shown = await suite.get(view.rollout_id)
        return shown if shown.rollback == "completed" else None

    final = await suite.eventually(rollback_completed, timeout=20)
    assert final, await suite.get(view.rollout_id)
    assert {d.device_id: d.status for d in final.devices} == dict.fromkeys(touched, "rolled_back")
    assert final.rolled_back_total == len(touched)
    # The late third failure (and any healthy report after the end) changed nothing.
    assert final.waves[1].failed == len(failed)
    assert final.status == "rolled_back"
    every = [e.data for e in await suite.events(view.rollout_id)]
    assert {type(d) for d in every[len(events):]} <= {DeviceRolledBack, RollbackCompleted}
    assert [type(d) for d in every].count(RollbackCompleted) == 1


async def test_simulated_pause_holds_the_next_wave_and_resume_finishes(suite: Any) -> None:
    gate = asyncio.Event()
    agents = await suite.add_agents(10)
    for agent in agents:
        agent.gate = gate
    v1 = await suite.publish(APP, "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", waves=["2", "100%"])
    paused = await suite.op("pause", view.rollout_id, "checking dashboards")
    assert paused.status == "paused"
    assert (await suite.op("pause", view.rollout_id)).status == "paused"  # pausing twice is harmless
    gate.set()  # wave 1 answers while paused: counted, but wave 2 does not start

    async def wave_1_done() -> bool:
        return (await suite.get(view.rollout_id)).waves[0].state == "completed"

    assert await suite.eventually(wave_1_done)
    await asyncio.sleep(1.0)  # five ticks
    held = await suite.get(view.rollout_id)
    assert (held.status, held.waves[0].succeeded, held.waves[1].state) == ("paused", 2, "waiting")
    wave_2 = [a for a in agents if a.device_id not in ("sim-00", "sim-01")]
    assert await suite.without_desired([a.device_id for a in wave_2])

    resumed = await suite.op("resume", view.rollout_id)
    assert resumed.status in ("running", "completed")
    done = await suite.wait_status(view.rollout_id, "completed")
    assert [w.succeeded for w in done.waves] == [2, 8]
    with pytest.raises(Conflict, match="cannot resume a rollout that is completed"):
        await suite.op("resume", view.rollout_id)
    assert all(a.running == {APP: "1.0.0"} for a in agents)


async def test_simulated_cancel_stops_the_rollout_and_frees_its_devices(suite: Any) -> None:
    gate = asyncio.Event()
    agents = await suite.add_agents(10)
    for agent in agents:
        agent.gate = gate
    v1 = await suite.publish(APP, "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", waves=["2", "100%"])
    cancelled = await suite.op("cancel", view.rollout_id, "wrong build")
    assert (cancelled.status, cancelled.reason) == ("cancelled", "wrong build")
    gate.set()  # late answers of wave 1 change nothing
    await asyncio.sleep(1.0)
    after = await suite.get(view.rollout_id)
    assert (after.status, after.waves[0].succeeded, after.waves[1].state) == ("cancelled", 0, "waiting")
    assert await suite.without_desired([a.device_id for a in agents[2:]])
    with pytest.raises(Conflict):
        await suite.op("pause", view.rollout_id)

    # Its reservations are released: a new rollout of the same app to all ten goes through.
    v2 = await suite.publish(APP, "1.0.1")
    again = await suite.create(v2, selector="fleet=sim", kind="all-at-once")
    done = await suite.wait_status(again.rollout_id, "completed")
    assert done.waves[0].succeeded == 10


async def test_simulated_agent_that_never_reports_times_out_as_a_failure(suite: Any) -> None:
    agents = await suite.add_agents(5)
    agents[2].script["1.0.0"] = "silent"
    v1 = await suite.publish(APP, "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", kind="all-at-once", device_s=1.5,
                              success=0.75, error=0.25)
    done = await suite.wait_status(view.rollout_id, "completed", "rolled_back", timeout=10)
    assert done.status == "completed"
    assert (done.waves[0].succeeded, done.waves[0].failed) == (4, 1)
    assert {d.device_id: d.status for d in done.devices}["sim-02"] == "timed_out"
    events = await suite.events(view.rollout_id)
    assert [b.device_id for b in bodies(events, DeviceTimedOut)] == ["sim-02"]
    summary = await suite.commands.call("orchestrator", "list", ListRollouts(), RolloutList)
    assert [(r.devices, r.succeeded, r.failed) for r in summary.rollouts] == [(5, 4, 1)]


async def test_simulated_timeouts_above_the_error_threshold_abort(suite: Any) -> None:
    agents = await suite.add_agents(4)
    for agent in agents[:2]:
        agent.script["1.0.0"] = "silent"
    v1 = await suite.publish(APP, "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", kind="all-at-once", device_s=1.0, error=0.25)
    done = await suite.wait_status(view.rollout_id, "rolled_back", "completed", timeout=10)
    assert (done.status, done.reason[:21]) == ("rolled_back", "wave 1: 2 of 4 device"), done.reason
    # Nothing ran before: rolling back removes the app from every touched device.
    for agent in agents:
        assert await suite.eventually(lambda a=agent: _async(a.running == {}))


async def test_yanked_package_cannot_be_rolled_out(suite: Any) -> None:
    await suite.add_agents(2)
    v1 = await suite.publish(APP, "1.0.0")
    await suite.packages.yank(APP, "1.0.0", "crashes on start")
    with pytest.raises(Rejected, match="yanked"):
        await suite.create(v1, selector="fleet=sim")
    summary = await suite.commands.call("orchestrator", "list", ListRollouts(), RolloutList)
    assert summary.rollouts == []
    assert await suite.without_desired(list(suite.agents))


async def test_overlapping_rollout_of_the_same_app_is_refused_naming_devices(suite: Any) -> None:
    gate = asyncio.Event()  # never opens: the first rollout stays active
    agents = await suite.add_agents(15)
    for agent in agents:
        agent.gate = gate
    v1 = await suite.publish(APP, "1.0.0")
    v2 = await suite.publish(APP, "1.1.0")
    first = await suite.create(v1, device_ids=[f"sim-{i:02d}" for i in range(10)], kind="all-at-once")
    assert first.status == "running"
    with pytest.raises(Conflict) as refused:
        await suite.create(v2, device_ids=[f"sim-{i:02d}" for i in range(5, 15)], kind="all-at-once",
                           rollout_id="second")
    overlap = [f"sim-{i:02d}" for i in range(5, 10)]
    assert refused.value.details == {d: first.rollout_id for d in overlap}
    assert all(d in str(refused.value) for d in overlap), str(refused.value)
    # Another app on the same devices is not a conflict.
    other = await suite.publish("other-app", "1.0.0")
    assert (await suite.create(other, device_ids=overlap, kind="all-at-once")).status == "running"

    async def both_apps() -> bool:  # one document per device carries every app assigned to it
        doc = await suite.desired("sim-05")
        return doc is not None and {n: a.package.version for n, a in doc.apps.items()} == {
            APP: "1.0.0", "other-app": "1.0.0"}

    assert await suite.eventually(both_apps), await suite.desired("sim-05")
    # Nothing of the refused rollout reached a device, nor was it stored (a create that cannot
    # start stores nothing); once the first ends, the same create goes through.
    assert all(set(a.versions_seen(APP)) <= {"1.0.0"} for a in agents)
    with pytest.raises(NotFound):
        await suite.get("second")
    await suite.op("cancel", first.rollout_id)
    gate.set()
    started = await suite.create(v2, device_ids=[f"sim-{i:02d}" for i in range(5, 15)],
                                 kind="all-at-once", rollout_id="second")
    assert started.status == "running"
    done = await suite.wait_status("second", "completed")
    assert done.waves[0].succeeded == 10


async def test_ineligible_simulated_devices_are_excluded_and_listed(suite: Any) -> None:
    await suite.add_agents(4, prefix="ok")
    await suite.add_agents(2, prefix="docker", runtimes=["docker"])
    await suite.add_agents(2, prefix="nokuksa", kuksa=Kuksa(present=False))
    await suite.add_agents(1, prefix="arm", arch="aarch64", python_version="3.12.1")
    reads_vss = await suite.publish(APP, "1.0.0", vss=True)
    view = await suite.create(reads_vss, selector="fleet=sim", kind="all-at-once")
    assert view.excluded == {
        "arm-00": "python 3.12.1, package needs 3.11",
        "docker-00": "no native runtime (has docker)", "docker-01": "no native runtime (has docker)",
        "nokuksa-00": "no KUKSA databroker", "nokuksa-01": "no KUKSA databroker",
    }
    done = await suite.wait_status(view.rollout_id, "completed")
    assert sorted(d.device_id for d in done.devices) == [f"ok-{i:02d}" for i in range(4)]
    for device_id in view.excluded:
        assert await suite.desired(device_id) is None
        assert suite.agents[device_id].docs == []
    # Without VSS, KUKSA is not needed; an unknown explicit id is excluded as such.
    plain = await suite.publish("plain-app", "1.0.0")
    ids = ["nokuksa-00", "docker-00", "ghost-1"]
    view = await suite.create(plain, device_ids=ids, kind="all-at-once")
    assert view.excluded == {"docker-00": "no native runtime (has docker)", "ghost-1": "unknown device"}
    assert [d.device_id for d in view.devices] == ["nokuksa-00"]
    await suite.wait_status(view.rollout_id, "completed")


# --- helpers ----------------------------------------------------------------------------------------


async def _async(value: Any) -> Any:
    return value


async def test_simulated_agent_offline_at_its_turn_is_waited_for_within_its_timeout(suite: Any) -> None:
    agents = await suite.add_agents(4)
    await agents[1].go_offline()
    v1 = await suite.publish(APP, "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", kind="all-at-once", device_s=8.0)

    async def others_done() -> bool:
        return (await suite.get(view.rollout_id)).waves[0].succeeded == 3

    assert await suite.eventually(others_done)
    await asyncio.sleep(0.5)
    assert (await suite.get(view.rollout_id)).status == "running"  # waiting for sim-01
    await agents[1].come_online()  # reads the newest document of its key, answers in time
    done = await suite.wait_status(view.rollout_id, "completed", "rolled_back")
    assert (done.status, done.waves[0].succeeded, done.waves[0].failed) == ("completed", 4, 0)
    assert agents[1].versions_seen(APP) == ["1.0.0"]


async def test_simulated_manual_rollback_of_a_completed_rollout_restores_the_previous_version(
    suite: Any,
) -> None:
    agents = await suite.add_agents(6)
    old = await suite.publish(APP, "1.0.0")
    first = await suite.create(old, selector="fleet=sim", kind="all-at-once")
    await suite.wait_status(first.rollout_id, "completed")
    new = await suite.publish(APP, "2.0.0")
    second = await suite.create(new, selector="fleet=sim", waves=["2", "100%"])
    await suite.wait_status(second.rollout_id, "completed")
    assert all(a.running == {APP: "2.0.0"} for a in agents)

    # Rolling back the older rollout leaves devices a later rollout owns alone.
    assert (await suite.op("rollback", first.rollout_id)).status == "rolled_back"
    await asyncio.sleep(0.5)
    assert all((a.running, a.revisions) == ({APP: "2.0.0"}, [1, 2]) for a in agents)

    rolled = await suite.op("rollback", second.rollout_id, "customer complaints")
    assert (rolled.status, rolled.reason) == ("rolled_back", "customer complaints")
    for agent in agents:
        assert await suite.eventually(lambda a=agent: _async(a.running == {APP: "1.0.0"}))
        assert agent.versions_seen(APP) == ["1.0.0", "2.0.0", "1.0.0"]
        assert agent.revisions == [1, 2, 3]
    assert (await suite.op("rollback", second.rollout_id)).status == "rolled_back"  # idempotent
    with pytest.raises(Conflict):
        await suite.op("pause", second.rollout_id)


async def test_simulated_rolling_rollout_goes_batch_by_batch(suite: Any) -> None:
    await suite.add_agents(10)
    v1 = await suite.publish(APP, "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", kind="rolling", batch_size=3)
    assert [w.size for w in view.waves] == [3, 3, 3, 1]
    done = await suite.wait_status(view.rollout_id, "completed")
    assert [w.succeeded for w in done.waves] == [3, 3, 3, 1]
    events = await suite.events(view.rollout_id)
    # Each batch is targeted only after the previous one completed.
    order = [(type(e.data).__name__, getattr(e.data, "wave", None)) for e in events
             if type(e.data).__name__ in ("WaveStarted", "WaveCompleted")]
    assert order == [(kind, w) for w in range(4) for kind in ("WaveStarted", "WaveCompleted")]
