"""Crashes, crash loops, memory limits, health-check rollback and hot swap — real processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

FAST_RESTARTS = {"SDV_AGENT_RESTART_BASE_S": "0.1", "SDV_AGENT_CRASH_LOOP": "3"}


async def test_kill_9_of_an_app_restarts_it(fleet: Any, harness: Any, tmp_path: Path) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    fleet.agent("car-k9", **FAST_RESTARTS)
    await fleet.desire("car-k9", 1, {"ticker": pkg})
    first = await fleet.until_state("car-k9", "ticker", "RUNNING", healthy=True)
    os.kill(first.pid, signal.SIGKILL)
    again = await fleet.until(lambda: _running_with_new_pid(fleet, "car-k9", first.pid), what="restart")
    assert again.restarts == 1
    await fleet.until(lambda: len(fleet.find_facts("car-k9", "AppStarted")) == 2, what="2nd AppStarted")
    await fleet.until(lambda: len(fleet.find_facts("car-k9", "AppHealthy")) == 2, what="healthy again")
    assert not fleet.find_facts("car-k9", "AppFailed")  # one crash is a restart, not a failure


async def _running_with_new_pid(fleet: Any, device: str, old_pid: int) -> Any:
    rep = await fleet.reported(device)
    app = rep.apps.get("ticker") if rep else None
    return app if app and app.state == "RUNNING" and app.pid not in (None, old_pid) else None


async def test_crash_loop_ends_failed_and_reported(fleet: Any, harness: Any, tmp_path: Path) -> None:
    crasher = harness.make_app(tmp_path, "crasher", "1.0.0", "import sys\nprint('boom')\nsys.exit(3)\n")
    pkg = await fleet.publish(crasher)
    fleet.agent("car-cl", **FAST_RESTARTS)
    await fleet.desire("car-cl", 1, {"crasher": pkg})
    failed = await fleet.fact("car-cl", "AppFailed", app="crasher")
    assert failed.data.stage == "run"
    assert "crash loop: 3 crashes" in failed.data.reason
    assert "exited with status 3" in failed.data.reason
    rep = await fleet.until_state("car-cl", "crasher", "FAILED")
    assert rep.restarts == 2
    assert len(fleet.find_facts("car-cl", "AppStarted")) == 3
    assert fleet.lines("car-cl", "crasher").count("boom") == 3


async def test_memory_limit_exceeded_is_stopped_and_reported(fleet: Any, harness: Any, tmp_path: Path) -> None:
    hog = harness.make_app(tmp_path, "hog", "1.0.0", (
        "import time\nprint('allocating', flush=True)\nblob = b'x' * (400 * 1024 * 1024)\n"
        "print('allocated', flush=True)\ntime.sleep(60)\n"), memory="128MB", alive_for=5)
    pkg = await fleet.publish(hog)
    agent = fleet.agent("car-mem", SDV_AGENT_RESTART_BASE_S="0.1", SDV_AGENT_CRASH_LOOP="2")
    await fleet.desire("car-mem", 1, {"hog": pkg})
    failed = await fleet.fact("car-mem", "AppFailed", app="hog", timeout=45)  # two kill cycles, loaded CI
    assert "memory limit exceeded" in failed.data.reason or "MemoryError" in "".join(fleet.lines("car-mem", "hog", "stderr"))
    rep = await fleet.until_state("car-mem", "hog", "FAILED")
    assert "memory limit exceeded" in (rep.last_error or "")
    assert not harness.processes_under(agent.data_dir)


async def test_upgrade_that_fails_its_health_check_rolls_back(fleet: Any, harness: Any, tmp_path: Path) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    bad = harness.make_app(tmp_path, "svc", "2.0.0", "import time\nprint('v2 up')\ntime.sleep(0.3)\nraise SystemExit(1)\n",
                           alive_for=1.5)
    v2 = await fleet.publish(bad)
    fleet.agent("car-rb")
    await fleet.desire("car-rb", 1, {"svc": v1})
    await fleet.until_state("car-rb", "svc", "RUNNING", healthy=True, version="1.0.0")

    await fleet.desire("car-rb", 2, {"svc": v2})
    rolled = await fleet.fact("car-rb", "AppRolledBack", app="svc")
    assert rolled.data.version == "2.0.0"
    assert rolled.data.to_version == "1.0.0"
    assert "before it was healthy" in rolled.data.reason
    failed = await fleet.fact("car-rb", "AppFailed", app="svc", version="2.0.0")
    assert failed.data.stage == "health"
    rep = await fleet.until_state("car-rb", "svc", "RUNNING", healthy=True, version="1.0.0")
    assert "2.0.0" in (rep.last_error or "")
    # The old version runs again, and the failed one is not retried within this rollout.
    await fleet.until(lambda: any(line.startswith("svc 1.0.0") for line in fleet.lines("car-rb", "svc")[1:]),
                      what="v1 banner again")
    assert len(fleet.find_facts("car-rb", "AppStarted", version="2.0.0")) == 1


async def test_hot_swap_starts_new_before_stopping_old(fleet: Any, harness: Any, tmp_path: Path) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "hot", "1.0.0", harness.ticker_source("hot"), hot_swap=True))
    v2 = await fleet.publish(harness.make_app(tmp_path, "hot", "2.0.0", harness.ticker_source("hot"), hot_swap=True))
    fleet.agent("car-hs")
    await fleet.desire("car-hs", 1, {"hot": v1})
    old = await fleet.until_state("car-hs", "hot", "RUNNING", healthy=True, version="1.0.0")
    await fleet.desire("car-hs", 2, {"hot": v2})
    new = await fleet.until_state("car-hs", "hot", "RUNNING", healthy=True, version="2.0.0")
    assert new.pid != old.pid
    assert new.previous_version == "1.0.0"
    order = [(f.type.split(".")[1], f.data.version) for f in fleet.facts if f.data.device_id == "car-hs"]
    started_new = order.index(("AppStarted", "2.0.0"))
    healthy_new = order.index(("AppHealthy", "2.0.0"))
    await fleet.until(lambda: fleet.find_facts("car-hs", "AppStopped", version="1.0.0"), what="old stopped")
    order = [(f.type.split(".")[1], f.data.version) for f in fleet.facts if f.data.device_id == "car-hs"]
    assert started_new < healthy_new < order.index(("AppStopped", "1.0.0"))


async def test_hot_swap_candidate_that_crashes_leaves_the_old_version_untouched(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "hot", "1.0.0", harness.ticker_source("hot"), hot_swap=True))
    bad = harness.make_app(tmp_path, "hot", "2.0.0", "raise SystemExit(2)\n", hot_swap=True)
    v2 = await fleet.publish(bad)
    fleet.agent("car-hf")
    await fleet.desire("car-hf", 1, {"hot": v1})
    old = await fleet.until_state("car-hf", "hot", "RUNNING", healthy=True, version="1.0.0")
    await fleet.desire("car-hf", 2, {"hot": v2})
    rolled = await fleet.fact("car-hf", "AppRolledBack", app="hot")
    assert rolled.data.to_version == "1.0.0"
    rep = await fleet.until_state("car-hf", "hot", "RUNNING", healthy=True, version="1.0.0")
    assert rep.pid == old.pid  # never interrupted
    assert not fleet.find_facts("car-hf", "AppStopped", version="1.0.0")
