"""Every agent fact names the desired document that caused it, and each outcome is said once —
real agent processes, real signed packages, a real NATS (issue #14).

A rollout counts a device by the facts that name the rollout: a fact that names the previous
rollout (or none) is lost to it, and a device that already runs the version must say so at once
or the rollout waits for its timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from sdv_events.schemas.deployment import DesiredApp

FAST_RESTARTS = {"SDV_AGENT_RESTART_BASE_S": "0.1"}
# Waits that include an agent process starting: seconds alone, but the 2-core machine running
# these is often shared with other suites.
START = 60.0
# Exits with status 3 when it reads "exit" on its stdin; a ticker otherwise.
EXITS_ON_REQUEST = """\
import sys, threading, time
def watch():
    for line in sys.stdin:
        if line.strip() == "exit":
            print("exiting with 3", flush=True)
            import os
            os._exit(3)
threading.Thread(target=watch, daemon=True).start()
while True:
    print("tick", flush=True)
    time.sleep(0.1)
"""


def entry(pkg: Any, rollout: str | None, **kw: Any) -> DesiredApp:
    return DesiredApp(package=pkg, rollout_id=rollout, **kw)


def causes(facts: list[Any]) -> list[tuple[str, str, str | None, int]]:
    return [(f.type.split(".")[1], f.data.version, f.data.rollout_id, f.data.desired_revision) for f in facts]


def distinct(fleet: Any, device: str, kind: str, **match: Any) -> set[Any]:
    """The facts seen, by event id: a fact published again under its own id (its ack lost to a
    killed agent) is seen twice on the subject but stored once."""
    return {f.event_id for f in fleet.find_facts(device, kind, **match)}


def device_facts(fleet: Any, device: str, since: int = 0) -> list[Any]:
    return [f for f in fleet.facts[since:] if f.data.device_id == device]


@pytest.mark.parametrize("hot", [False, True], ids=["cold", "hot-swap"])
async def test_every_fact_of_an_upgrade_names_the_new_rollout(fleet: Any, harness: Any, tmp_path: Path,
                                                              hot: bool) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc"), hot_swap=hot))
    v2 = await fleet.publish(harness.make_app(tmp_path, "svc", "2.0.0", harness.ticker_source("svc"), hot_swap=hot))
    device = f"car-up-{'hot' if hot else 'cold'}"
    fleet.agent(device, **FAST_RESTARTS)
    await fleet.desire(device, 1, {"svc": entry(v1, "r1")})
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="1.0.0", timeout=START)
    await fleet.fact(device, "AppHealthy", version="1.0.0")

    mark = len(fleet.facts)
    await fleet.desire(device, 2, {"svc": entry(v2, "r2")})
    await fleet.fact(device, "AppHealthy", version="2.0.0")
    await fleet.until(lambda: fleet.find_facts(device, "AppStopped", version="1.0.0"), what="old version stopped")
    upgrade = causes(device_facts(fleet, device, mark))
    kinds = {(kind, version) for kind, version, _, _ in upgrade}
    assert {("AppDownloadStarted", "2.0.0"), ("AppInstalled", "2.0.0"), ("AppStopped", "1.0.0"),
            ("AppStarted", "2.0.0"), ("AppHealthy", "2.0.0")} <= kinds, upgrade
    assert {(rollout, revision) for _, _, rollout, revision in upgrade} == {("r2", 2)}, upgrade

    # A document that changes only another app leaves the cause of this one as it was: a crash
    # and restart of svc afterwards still name r2 and the revision that asked for 2.0.0.
    other = await fleet.publish(harness.make_app(tmp_path, "other", "1.0.0", harness.ticker_source("other")))
    await fleet.desire(device, 3, {"svc": entry(v2, "r2"), "other": entry(other, "r3")})
    await fleet.fact(device, "AppHealthy", app="other")
    running = await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="2.0.0")
    mark = len(fleet.facts)
    os.killpg(running.pid, signal.SIGKILL)
    await fleet.until(lambda: [f for f in device_facts(fleet, device, mark) if f.type.endswith("AppHealthy.v1")],
                      what="svc healthy again after a crash")
    assert {(rollout, revision) for _, _, rollout, revision in causes(device_facts(fleet, device, mark))} == {("r2", 2)}


async def test_a_tampered_upgrade_fails_its_own_rollout_at_once(fleet: Any, harness: Any, tmp_path: Path) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    v2, artifact = fleet.build(harness.make_app(tmp_path, "svc", "2.0.0", harness.ticker_source("svc")))
    tampered = bytearray(artifact)
    tampered[len(tampered) // 2] ^= 0xFF
    await fleet.put_artifact(v2.object_name, bytes(tampered))
    fleet.agent("car-tamper")
    await fleet.desire("car-tamper", 1, {"svc": entry(v1, "r1")})
    before = await fleet.until_state("car-tamper", "svc", "RUNNING", healthy=True, version="1.0.0", timeout=START)

    mark = len(fleet.facts)
    began = time.monotonic()
    await fleet.desire("car-tamper", 2, {"svc": entry(v2, "r2")})
    failed = await fleet.fact("car-tamper", "AppFailed", version="2.0.0")
    took = time.monotonic() - began
    assert failed.data.stage == "verify"
    assert (failed.data.rollout_id, failed.data.desired_revision) == ("r2", 2)
    assert took < 5.0, f"the refusal took {took:.1f}s"
    assert {rollout for _, _, rollout, _ in causes(device_facts(fleet, "car-tamper", mark))} == {"r2"}
    # Nothing of it ran; the old version was never interrupted.
    after = await fleet.until_state("car-tamper", "svc", "RUNNING", healthy=True, version="1.0.0")
    assert after.pid == before.pid
    assert not fleet.find_facts("car-tamper", "AppStarted", version="2.0.0")
    print(f"\ntampered upgrade: AppFailed(verify, r2) {took:.2f}s after the desired write")


async def test_a_rollbacks_facts_name_the_rollout_that_rolled_back(fleet: Any, harness: Any, tmp_path: Path) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    v2 = await fleet.publish(harness.make_app(tmp_path, "svc", "2.0.0", harness.ticker_source("svc")))
    fleet.agent("car-rbk", **FAST_RESTARTS)
    await fleet.desire("car-rbk", 1, {"svc": entry(v1, "r1")})
    await fleet.until_state("car-rbk", "svc", "RUNNING", healthy=True, version="1.0.0", timeout=START)
    await fleet.desire("car-rbk", 2, {"svc": entry(v2, "r2")})
    await fleet.until_state("car-rbk", "svc", "RUNNING", healthy=True, version="2.0.0")

    # The orchestrator rolls r2 back: the restored assignment carries no rollout of its own.
    mark = len(fleet.facts)
    await fleet.desire("car-rbk", 3, {"svc": entry(v1, None, rollback=True)})
    back = await fleet.until_state("car-rbk", "svc", "RUNNING", healthy=True, version="1.0.0")
    await fleet.fact("car-rbk", "AppHealthy", version="1.0.0", rollout_id="r2")
    rollback = causes(device_facts(fleet, "car-rbk", mark))
    assert {("AppStopped", "2.0.0"), ("AppStarted", "1.0.0"), ("AppHealthy", "1.0.0")} <= {
        (kind, version) for kind, version, _, _ in rollback}, rollback
    assert {(rollout, revision) for _, _, rollout, revision in rollback} == {("r2", 3)}, rollback

    # Later facts about the restored version keep naming it (never None).
    mark = len(fleet.facts)
    os.killpg(back.pid, signal.SIGKILL)
    await fleet.until(lambda: [f for f in device_facts(fleet, "car-rbk", mark) if f.type.endswith("AppHealthy.v1")],
                      what="healthy again after a crash")
    assert {rollout for _, _, rollout, _ in causes(device_facts(fleet, "car-rbk", mark))} == {"r2"}


async def test_a_rollout_of_the_version_a_device_runs_is_answered_at_once(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    bad = await fleet.publish(harness.make_app(tmp_path, "svc", "2.0.0", "import sys, time\ntime.sleep(0.2)\nsys.exit(1)\n",
                                               alive_for=1.0))
    other = await fleet.publish(harness.make_app(tmp_path, "other", "1.0.0", harness.ticker_source("other")))
    agent = fleet.agent("car-cur", **FAST_RESTARTS)
    await fleet.desire("car-cur", 1, {"svc": entry(v1, "r1")})
    before = await fleet.until_state("car-cur", "svc", "RUNNING", healthy=True, version="1.0.0", timeout=START)
    healthy = await fleet.fact("car-cur", "AppHealthy", version="1.0.0")

    mark = len(fleet.facts)
    began = time.monotonic()
    await fleet.desire("car-cur", 2, {"svc": entry(v1, "r2")})
    current = await fleet.fact("car-cur", "AppAlreadyCurrent", rollout_id="r2")
    took = time.monotonic() - began
    assert took < 2.0, f"AppAlreadyCurrent took {took:.2f}s"
    assert (current.data.version, current.data.digest, current.data.desired_revision) == ("1.0.0", v1.digest, 2)
    assert current.data.since is not None
    since = datetime.fromisoformat(current.data.since)
    assert abs((since - healthy.occurred_at).total_seconds()) < 1.0  # when it became healthy
    await asyncio.sleep(1.0)
    assert causes(device_facts(fleet, "car-cur", mark)) == [("AppAlreadyCurrent", "1.0.0", "r2", 2)]
    assert (await fleet.until_state("car-cur", "svc", "RUNNING", healthy=True)).pid == before.pid  # nothing changed

    # A document that changes only another app, and an agent restart, do not say it again.
    await fleet.desire("car-cur", 3, {"svc": entry(v1, "r2"), "other": entry(other, "r3")})
    await fleet.fact("car-cur", "AppHealthy", app="other")
    agent.stop(signal.SIGKILL)
    agent.start()
    await fleet.until(lambda: agent.log().count("re_adopted") >= 2, what="both apps re-adopted", timeout=START)
    await asyncio.sleep(1.5)
    assert len(distinct(fleet, "car-cur", "AppAlreadyCurrent")) == 1

    # Also when the device runs the version because it rolled back: a failed upgrade (r4) left
    # 1.0.0 running; a new rollout of 1.0.0 (r5) is answered at once.
    await fleet.desire("car-cur", 4, {"svc": entry(bad, "r4"), "other": entry(other, "r3")})
    await fleet.fact("car-cur", "AppRolledBack", rollout_id="r4")
    await fleet.fact("car-cur", "AppHealthy", version="1.0.0", rollout_id="r4")
    began = time.monotonic()
    await fleet.desire("car-cur", 5, {"svc": entry(v1, "r5"), "other": entry(other, "r3")})
    await fleet.fact("car-cur", "AppAlreadyCurrent", rollout_id="r5", version="1.0.0")
    took_after_rollback = time.monotonic() - began
    assert took_after_rollback < 2.0
    print(f"\nalready current: {took:.2f}s; after a rollback: {took_after_rollback:.2f}s")


async def test_a_new_rollout_of_an_installed_but_stopped_version_starts_it(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    fleet.agent("car-stp")
    await fleet.desire("car-stp", 1, {"svc": entry(v1, "r1")})
    await fleet.until_state("car-stp", "svc", "RUNNING", healthy=True, timeout=START)
    await fleet.op("car-stp", "stop", {"app": "svc"})
    await fleet.until_state("car-stp", "svc", "STOPPED")

    mark = len(fleet.facts)
    await fleet.desire("car-stp", 2, {"svc": entry(v1, "r2")})
    await fleet.fact("car-stp", "AppHealthy", rollout_id="r2")
    assert [kind for kind, *_ in causes(device_facts(fleet, "car-stp", mark))] == ["AppStarted", "AppHealthy"]
    assert {(rollout, revision) for _, _, rollout, revision in causes(device_facts(fleet, "car-stp", mark))} == {("r2", 2)}


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_an_agent_restart_reports_no_outcome_twice(fleet: Any, harness: Any, tmp_path: Path, how: int) -> None:
    svc = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    other = await fleet.publish(harness.make_app(tmp_path, "other", "1.0.0", harness.ticker_source("other")))
    device = f"car-once-{how.name.lower()}"
    agent = fleet.agent(device)
    await fleet.desire(device, 1, {"svc": entry(svc, "r1")})
    await fleet.fact(device, "AppHealthy", app="svc", timeout=START)
    # A newer document for another app: the device's revision moves on, svc's cause does not.
    await fleet.desire(device, 2, {"svc": entry(svc, "r1"), "other": entry(other, "r2")})
    await fleet.fact(device, "AppHealthy", app="other")

    for restart in (1, 2):
        agent.stop(how)
        agent.start()
        await fleet.until(lambda n=restart: agent.log().count("re_adopted") == 2 * n, what="both apps re-adopted", timeout=START)
    await asyncio.sleep(2.0)  # more than the health check's alive_for: a re-check would have reported
    for app in ("svc", "other"):
        # A fact whose ack the killed agent never saw is sent again, under its own id (the
        # stream drops it): never one under a new id.
        for kind in ("AppHealthy", "AppStarted"):
            assert len(distinct(fleet, device, kind, app=app)) == 1, (kind, fleet.fact_types(device, app))
    stored = await harness.stream_messages(fleet.js, "SDV_EVENTS", f"sdv.evt.agent.{device}.AppHealthy")
    assert len(stored) == 2


async def test_a_trial_version_that_died_while_the_agent_was_down_is_rolled_back_with_its_exit_status(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    v2 = await fleet.publish(harness.make_app(tmp_path, "svc", "2.0.0", harness.ticker_source("svc"), alive_for=30))
    agent = fleet.agent("car-trial", **FAST_RESTARTS)
    await fleet.desire("car-trial", 1, {"svc": entry(v1, "r1")})
    first = await fleet.until_state("car-trial", "svc", "RUNNING", healthy=True, version="1.0.0", timeout=START)
    await fleet.desire("car-trial", 2, {"svc": entry(v2, "r2")})
    started = await fleet.fact("car-trial", "AppStarted", version="2.0.0")  # on trial for 30 s

    agent.stop(signal.SIGKILL)
    os.killpg(started.data.pid, signal.SIGKILL)  # dies while no agent runs
    await asyncio.sleep(0.3)
    agent.start()
    failed = await fleet.fact("car-trial", "AppFailed", version="2.0.0", timeout=START)
    assert "killed by SIGKILL while no agent was running" in failed.data.reason
    assert (failed.data.stage, failed.data.rollout_id) == ("health", "r2")
    rolled = await fleet.fact("car-trial", "AppRolledBack", version="2.0.0")
    assert (rolled.data.to_version, rolled.data.rollout_id) == ("1.0.0", "r2")
    rep = await fleet.until(lambda: _restarted(fleet, "car-trial", first.pid), what="1.0.0 running again")
    assert rep.version == "1.0.0"
    assert "killed by SIGKILL while no agent was running" in (rep.last_error or "")
    await asyncio.sleep(1.0)
    # Not started again (the start seen twice, if at all, is the same fact sent again: the killed
    # agent had no ack for it).
    assert len(distinct(fleet, "car-trial", "AppStarted", version="2.0.0")) == 1


async def test_a_trial_version_that_ended_with_the_previous_boot_is_started_again_not_rolled_back(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    """A shutdown or power loss ends every process: not the app's doing. Simulated by a record
    whose process started before this machine's boot time (its pid and start time, as a
    previous boot would have left them)."""
    v1 = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    v2 = await fleet.publish(harness.make_app(tmp_path, "svc", "2.0.0", harness.ticker_source("svc"), alive_for=3))
    agent = fleet.agent("car-reboot", **FAST_RESTARTS)
    await fleet.desire("car-reboot", 1, {"svc": entry(v1, "r1")})
    await fleet.until_state("car-reboot", "svc", "RUNNING", healthy=True, version="1.0.0", timeout=START)
    await fleet.desire("car-reboot", 2, {"svc": entry(v2, "r2")})
    started = await fleet.fact("car-reboot", "AppStarted", version="2.0.0")

    agent.stop(signal.SIGKILL)
    os.killpg(started.data.pid, signal.SIGTERM)  # what a shutdown does
    db = sqlite3.connect(agent.data_dir / "agent.db")
    (raw,) = db.execute("SELECT record FROM apps WHERE name = 'svc'").fetchone()
    record = msgspec.json.decode(raw)
    assert record["on_trial"]
    record["pid_started"] = psutil.boot_time() - 60.0
    db.execute("UPDATE apps SET record = ? WHERE name = 'svc'", (msgspec.json.encode(record),))
    db.commit()
    db.close()
    agent.start()
    await fleet.until(lambda: len(distinct(fleet, "car-reboot", "AppStarted", version="2.0.0")) == 2,
                      what="2.0.0 started again", timeout=START)
    await fleet.fact("car-reboot", "AppHealthy", version="2.0.0", rollout_id="r2")
    assert not fleet.find_facts("car-reboot", "AppFailed")
    assert not fleet.find_facts("car-reboot", "AppRolledBack")
    assert "process_ended_with_the_agent_or_the_machine" in agent.log()


async def test_an_app_that_exited_while_the_agent_was_down_counts_as_a_crash_with_its_status(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "quits", "1.0.0", EXITS_ON_REQUEST))
    agent = fleet.agent("car-quit", **FAST_RESTARTS)
    await fleet.desire("car-quit", 1, {"quits": entry(pkg, "r1")})
    before = await fleet.until_state("car-quit", "quits", "RUNNING", healthy=True, timeout=START)

    agent.stop()
    pipe = agent.data_dir / "run" / "quits" / f"1.0.0-{pkg.digest[:12]}" / "stdin.pipe"
    fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"exit\n")
    os.close(fd)
    await asyncio.sleep(0.5)
    agent.start()
    after = await fleet.until(lambda: _restarted(fleet, "car-quit", before.pid), what="restarted", timeout=START)
    assert after.restarts == 1  # counted as a crash (backoff, crash-loop window)
    assert "exited with status 3 while no agent was running" in (after.last_error or "")
    assert "exiting with 3" in fleet.lines("car-quit", "quits")  # its last words were collected
    assert not fleet.find_facts("car-quit", "AppFailed")  # one crash is a restart, not a failure


async def _restarted(fleet: Any, device: str, old_pid: int) -> Any:
    rep = await fleet.reported(device)
    app = next(iter(rep.apps.values()), None) if rep else None
    return app if app and app.state == "RUNNING" and app.healthy and app.pid not in (None, old_pid) else None


async def test_crashes_recorded_before_a_reboot_do_not_make_a_crash_loop_after_it(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    agent = fleet.agent("car-boot", SDV_AGENT_RESTART_BASE_S="0.1", SDV_AGENT_CRASH_LOOP="3")
    await fleet.desire("car-boot", 1, {"svc": entry(pkg, "r1")})
    await fleet.until_state("car-boot", "svc", "RUNNING", healthy=True, timeout=START)
    agent.stop()
    # Two crashes kept from before the reboot, as a monotonic clock read them then: that clock
    # had run for days; after the reboot it starts again near zero, below both.
    db = sqlite3.connect(agent.data_dir / "agent.db")
    (raw,) = db.execute("SELECT record FROM apps WHERE name = 'svc'").fetchone()
    record = msgspec.json.decode(raw)
    uptime_before_reboot = time.monotonic() + 5 * 86400
    record["crashes"] = [uptime_before_reboot - 20, uptime_before_reboot - 10]
    db.execute("UPDATE apps SET record = ? WHERE name = 'svc'", (msgspec.json.encode(record),))
    db.commit()
    db.close()
    agent.start()
    running = await fleet.until_state("car-boot", "svc", "RUNNING", healthy=True, timeout=START)
    await fleet.until(lambda: "re_adopted" in agent.log(), what="re-adoption", timeout=START)

    os.killpg(running.pid, signal.SIGKILL)  # one crash after the reboot: a restart, not a crash loop
    again = await fleet.until(lambda: _restarted(fleet, "car-boot", running.pid), what="restart")
    assert again.restarts == 1
    assert not fleet.find_facts("car-boot", "AppFailed")
    crashes = agent.records()["svc"]["crashes"]
    assert len(crashes) == 1
    assert abs(crashes[0] - time.time()) < 60  # wall clock, kept as such


async def test_simulated_devices_answer_a_rollout_of_the_version_they_run_at_once(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "speed", "1.0.0", "print('speed')\n", alive_for=0.5))
    sim = fleet.simulator(5)
    devices = sim.device_ids
    for device in devices:
        await fleet.desire(device, 1, {"speed": entry(pkg, "r1")})
    for device in devices:
        await fleet.until_state(device, "speed", "RUNNING", healthy=True, timeout=START)

    took = {}
    for device in devices:
        began = time.monotonic()
        await fleet.desire(device, 2, {"speed": entry(pkg, "r2")})
        current = await fleet.fact(device, "AppAlreadyCurrent", rollout_id="r2", timeout=10)
        took[device] = time.monotonic() - began
        assert (current.data.digest, current.data.desired_revision) == (pkg.digest, 2)
    assert max(took.values()) < 2.0, took
    await asyncio.sleep(1.0)
    for device in devices:
        assert fleet.fact_types(device, "speed").count("AppAlreadyCurrent") == 1
        assert fleet.fact_types(device, "speed").count("AppStarted") == 1
    print(f"\nsimulated devices already current after {max(took.values()):.2f}s at most")
