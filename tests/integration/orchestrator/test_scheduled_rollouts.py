"""Scheduled rollouts (issue 15) through the real orchestrator, packager and registry on real NATS
and PostgreSQL, with SIMULATED agents (fleet_harness.py) that stage a version whose desired
document carries an activation, report why they defer, and switch when the hold is released or
the gates hold — the agent's contract; the real agent's end-to-end comes with it.

- `sdv rollout activate` over the bus releases held devices (new desired revisions without the
  hold), one device or all, and refuses an unknown rollout, a stranger, a finished rollout;
- a policy with a gate starts a gated rollout when a version is promoted to its channel (the
  desired documents carry the gate);
- a deferred device is not failed by the device timeout, and is by the activation deadline;
- a window that opens a few seconds later: nobody targeted before, `waiting` with the opening;
- a start time and a rate: the targeted events' times show them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from sdv_client.cli import app as sdv
from sdv_events.bus import Conflict, InvalidRequest, NotFound
from sdv_events.schemas.rollouts import DeviceTargeted, ListRollouts, RolloutList, RolloutView
from sdv_events.schemas.scheduling import (
    ActivateRollout,
    ActivationRequested,
    DeviceDeferred,
    DeviceStaged,
    Pacing,
    RolloutWaiting,
    Schedule,
)

pytestmark = pytest.mark.timeout(180)
SPEED = "Vehicle.Speed == 0"


async def cli(suite: Any, *args: str, as_json: bool = True) -> tuple[int, Any]:
    result = await asyncio.to_thread(
        CliRunner().invoke, sdv, [*args, *(["--json"] if as_json else [])],
        env={"SDV_NATS_URL": suite.url, "SDV_NATS_CREDS": "", "SDV_NATS_CA": "", "COLUMNS": "200"})
    return result.exit_code, json.loads(result.stdout) if as_json else result.stdout


async def view_until(suite: Any, rollout_id: str, check: Any, what: str, timeout: float = 20) -> RolloutView:
    async def reached() -> RolloutView | None:
        view = await suite.get(rollout_id)
        return view if check(view) else None

    found = await suite.eventually(reached, timeout=timeout, interval=0.1)
    assert found, f"{what}: {await suite.get(rollout_id)}"
    return found


async def test_rollout_activate_releases_held_devices_over_the_bus(suite: Any) -> None:
    agents = await suite.add_agents(3, prefix="hold", labels={"fleet": "hold"})
    package = await suite.publish("held-app", "1.0.0")
    view = await suite.create(package, selector="fleet=hold", waves=["100%"],
                              schedule=Schedule(hold=True))
    rollout_id = view.rollout_id
    # Every device downloads, verifies and waits: held, counted apart from failures.
    held = await view_until(suite, rollout_id, lambda v: v.deferred_total == 3, "all deferred")
    assert (held.status, held.staged_total, held.failed_total, held.deferred_by) == (
        "running", 3, 0, {"held": 3})
    assert {d.status for d in held.devices} == {"deferred"}
    for agent in agents:
        doc = await suite.desired(agent.device_id)
        assert doc.apps["held-app"].activation.hold is True
    code, shown = await cli(suite, "rollout", "get", rollout_id, as_json=False)
    assert code == 0, shown
    assert "staged (downloaded, waiting to switch): 3; deferred 3 (held: 3)" in shown
    assert shown.count("held until `sdv rollout activate`") == 3

    # One device by name, from the CLI: a new revision without the hold; it switches.
    first = agents[0].device_id
    before = (await suite.desired(first)).revision
    code, doc = await cli(suite, "rollout", "activate", rollout_id, "--device", first)
    assert code == 0, doc
    assert doc["rollout"]["activated_total"] == 1

    async def released() -> Any:  # the desired documents are a projection: a moment later
        doc = await suite.desired(first)
        return doc if doc.revision > before else None

    after = await suite.eventually(released, timeout=10)
    assert after, await suite.desired(first)
    assert after.apps["held-app"].activation is None
    one = await view_until(suite, rollout_id, lambda v: v.succeeded_total == 1, "first switched")
    assert {d.device_id for d in one.devices if d.status == "succeeded"} == {first}
    assert (await suite.desired(agents[1].device_id)).apps["held-app"].activation.hold is True

    # Typed refusals, over the bus.
    with pytest.raises(InvalidRequest, match="not in rollout"):
        await suite.commands.call("orchestrator", "activate",
                                  ActivateRollout(rollout_id=rollout_id, device_ids=["stranger"]),
                                  RolloutView)
    with pytest.raises(NotFound):
        await suite.commands.call("orchestrator", "activate",
                                  ActivateRollout(rollout_id="no-such-rollout"), RolloutView)

    # The rest at once.
    await suite.commands.call("orchestrator", "activate", ActivateRollout(rollout_id=rollout_id),
                              RolloutView)
    done = await suite.wait_status(rollout_id, "completed", "rolled_back", "aborted", timeout=30)
    assert (done.status, done.succeeded_total, done.staged_total) == ("completed", 3, 0)
    events = [e.data for e in await suite.events(rollout_id)]
    released = [e for e in events if isinstance(e, ActivationRequested)]
    assert [(e.device_ids, e.all, e.devices) for e in released] == [([first], False, 1), ([], True, 2)]
    assert "cli:" in released[0].by
    assert released[1].by.endswith("operator:test")  # unverified: a plain NATS server
    code, refused = await cli(suite, "rollout", "activate", rollout_id)
    assert (code, refused["code"]) == (1, "conflict"), refused
    with pytest.raises(Conflict, match="completed"):
        await suite.commands.call("orchestrator", "activate", ActivateRollout(rollout_id=rollout_id),
                                  RolloutView)


async def test_a_policy_with_a_gate_starts_a_gated_rollout_when_a_version_is_promoted(suite: Any) -> None:
    agents = await suite.add_agents(2, prefix="gate", labels={"env": "gated"})
    code, doc = await cli(suite, "policy", "set", "gated", "--app", "gated-app", "--channel", "beta",
                          "--selector", "env=gated", "--strategy", "all-at-once", "--error", "0.5",
                          "--device-timeout", "30", "--gate", SPEED, "--activation-timeout", "3600")
    assert code == 0, doc
    assert doc["policy"]["schedule"]["gates"] == [SPEED]
    assert doc["policy"]["thresholds"]["error"] == 0.5
    package = await suite.publish("gated-app", "1.0.0")  # on dev: not the policy's channel
    await suite.packages.promote("gated-app", "1.0.0", "beta")

    async def started() -> Any:
        found = await suite.commands.call("orchestrator", "list", ListRollouts(app="gated-app"),
                                          RolloutList)
        return found.rollouts[0] if found.rollouts else None

    row = await suite.eventually(started, timeout=30)
    assert row, "the policy started no rollout on promote"
    assert row.schedule.gates == [SPEED]
    for agent in agents:
        async def gated(a: Any = agent) -> Any:
            doc = await suite.desired(a.device_id)
            return doc if doc and "gated-app" in doc.apps else None

        desired = await suite.eventually(gated, timeout=20)
        assert desired, "no desired document"
        assert desired.apps["gated-app"].package.digest == package.digest
        assert desired.apps["gated-app"].activation.gates == [SPEED]
        assert desired.apps["gated-app"].activation.hold is False
    view = await view_until(suite, row.rollout_id, lambda v: v.deferred_total == 2, "deferred")
    assert view.deferred_by == {SPEED: 2}
    assert {d.reason for d in view.devices} == {
        "waiting for Vehicle.Speed == 0: Vehicle.Speed has no value yet"}
    listed = await cli(suite, "rollout", "list", "--app", "gated-app")
    assert listed[1]["rollouts"][0]["deferred"] == 2
    # The vehicles stop: the gate holds, each switches.
    for agent in agents:
        await agent.open_gates(Vehicle_Speed=0)
    done = await suite.wait_status(row.rollout_id, "completed", "rolled_back", "aborted", timeout=30)
    assert (done.status, done.succeeded_total) == ("completed", 2)


async def test_a_deferred_device_is_failed_by_the_activation_deadline_not_the_device_timeout(
        suite: Any) -> None:
    [agent] = await suite.add_agents(1, prefix="late", labels={"fleet": "late"})
    agent.signals["Vehicle.Speed"] = 50.0
    package = await suite.publish("late-app", "1.0.0")
    view = await suite.create(package, selector="fleet=late", waves=["100%"], device_s=2.0,
                              schedule=Schedule(gates=[SPEED], activation_timeout_s=8.0))
    deferred = await view_until(suite, view.rollout_id, lambda v: v.deferred_total == 1, "deferred")
    assert deferred.devices[0].reason == "waiting for Vehicle.Speed == 0: Vehicle.Speed is 50"
    assert deferred.devices[0].deferral.value == 50.0
    await asyncio.sleep(4.0)  # twice the device timeout
    still = await suite.get(view.rollout_id)
    assert (still.status, still.failed_total, still.deferred_total) == ("running", 0, 1)
    done = await suite.wait_status(view.rollout_id, "completed", "rolled_back", "aborted", timeout=20)
    failure = {d.device_id: d.reason for d in done.devices}[agent.device_id]
    assert "not activated by its activation deadline (8 s after it was staged)" in failure
    assert "last deferral: waiting for Vehicle.Speed == 0: Vehicle.Speed is 50" in failure
    events = [e.data for e in await suite.events(view.rollout_id)]
    staged = next(e for e in events if isinstance(e, DeviceStaged))
    assert isinstance(next(e for e in events if isinstance(e, DeviceDeferred)), DeviceDeferred)
    targeted = next(e for e in events if isinstance(e, DeviceTargeted))
    assert staged.deadline - targeted.deadline > timedelta(seconds=5)


def _next_minute(at_least_s: float) -> datetime:
    now = datetime.now(UTC)
    opening = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return opening if (opening - now).total_seconds() >= at_least_s else opening + timedelta(minutes=1)


async def test_a_window_opening_seconds_later_targets_nobody_until_it_opens(suite: Any) -> None:
    await suite.add_agents(3, prefix="win", labels={"fleet": "win"})
    await suite.publish("win-app", "1.0.0")
    opening = _next_minute(at_least_s=4)  # windows have minutes; at most a minute's wait
    closing = opening + timedelta(minutes=2)
    window = f"daily {opening:%H:%M}-{closing:%H:%M} UTC"
    code, doc = await cli(suite, "rollout", "create", "win-app", "1.0.0", "--selector", "fleet=win",
                          "--waves", "100%", "--window", window)
    assert code == 0, doc
    rollout = doc["rollout"]
    assert rollout["status"] == "waiting"
    assert datetime.fromisoformat(rollout["waiting"]["until"]) == opening
    assert rollout["schedule"]["windows"] == [window]

    async def listed() -> Any:  # the catalog is a projection: a moment later
        rows = (await cli(suite, "rollout", "list", "--app", "win-app"))[1]["rollouts"]
        return rows[0] if rows else None

    row = await suite.eventually(listed, timeout=10)
    assert row, "the catalog never listed the rollout"
    assert row["status"] == "waiting", row
    assert datetime.fromisoformat(row["waiting"]["until"]) == opening
    code, table = await cli(suite, "rollout", "get", rollout["rollout_id"], as_json=False)
    assert f"next opening {opening.isoformat(timespec='minutes')}" in table
    await asyncio.sleep(max(0.0, (opening - datetime.now(UTC)).total_seconds() - 1.0))
    assert not [e for e in await suite.events(rollout["rollout_id"]) if isinstance(e.data, DeviceTargeted)]
    done = await suite.wait_status(rollout["rollout_id"], "completed", "rolled_back", "aborted",
                                   timeout=30)
    assert done.status == "completed"
    events = [e.data for e in await suite.events(rollout["rollout_id"])]
    (waiting,) = [e for e in events if isinstance(e, RolloutWaiting)]
    assert (waiting.reason, waiting.until) == ("window", opening)
    assert all(e.at >= opening for e in events if isinstance(e, DeviceTargeted))


async def test_a_start_time_and_a_rate_show_in_the_targeted_events_times(suite: Any) -> None:
    await suite.add_agents(5, prefix="rate", labels={"fleet": "rate"})
    package = await suite.publish("rate-app", "1.0.0")
    start = datetime.now(UTC) + timedelta(seconds=3)
    view = await suite.create(package, selector="fleet=rate", waves=["100%"],
                              schedule=Schedule(start_at=start, pacing=Pacing(per_minute=60)))
    assert view.status == "waiting"
    assert view.waiting.until == start
    done = await suite.wait_status(view.rollout_id, "completed", "rolled_back", "aborted", timeout=40)
    assert done.status == "completed", done.reason
    times = [e.data.at for e in await suite.events(view.rollout_id) if isinstance(e.data, DeviceTargeted)]
    assert len(times) == 5
    assert times[0] >= start
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.99 for gap in gaps), gaps  # 60 a minute: one a second, never a burst
    assert (times[-1] - times[0]).total_seconds() < 10, gaps


def readme_scheduled_command() -> list[str]:
    """The README's scheduled-rollout example, its `\\`-continued lines joined, as the shell
    would split it."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    joined = re.sub(r"\\\n\s*", "", readme)
    line = next(x for x in joined.splitlines() if x.startswith("sdv rollout create speed-monitor 1.4.0"))
    return shlex.split(line)


async def test_the_readmes_scheduled_rollout_command_creates_a_rollout_waiting_for_its_start(
        suite: Any) -> None:
    """Run verbatim (CLI through the real orchestrator): a rollout with every scheduling option,
    waiting for its start time, targeting nobody, its schedule as the operator wrote it."""
    args = readme_scheduled_command()
    assert args[:3] == ["sdv", "rollout", "create"]
    await suite.add_agents(2, prefix="prod", labels={"env": "prod"})
    await suite.add_agents(1, prefix="prod-us", labels={"env": "prod", "zone": "us"})
    await suite.publish("speed-monitor", "1.4.0")

    code, answer = await cli(suite, *args[1:])
    assert code == 0, answer
    view = msgspec.convert(answer["rollout"], RolloutView)
    assert view.status == "waiting"
    assert view.waiting is not None
    assert (view.waiting.reason, view.waiting.until) == ("start_at", datetime(2030, 6, 1, 20, 0, tzinfo=UTC))
    schedule = view.schedule
    assert schedule is not None
    assert schedule.windows == ["Mon-Fri 22:00-05:00 Europe/Berlin"]
    assert [(w.label, w.windows) for w in schedule.label_windows] == [
        ("zone=us", ["Mon-Fri 22:00-05:00 America/New_York"])]
    assert (schedule.pacing.per_minute, schedule.pacing.growth, schedule.pacing.max_in_flight) == (60, 2, 200)
    assert schedule.gates == ["Vehicle.Speed == 0",
                              "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current >= 30"]
    assert (schedule.hold, schedule.activation_timeout_s) == (True, 172800)
    await asyncio.sleep(1.0)
    assert not [e for e in await suite.events(view.rollout_id) if isinstance(e.data, DeviceTargeted)]
    await suite.op("cancel", view.rollout_id, "test done")
