"""The edge agent under restarts and outages: its own restart (SIGTERM or kill -9), a NATS outage
while an app prints, a device that was offline while its desired state moved on."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sdv_events.servers import NatsServer


def _harness() -> ModuleType:
    name = "sdv_agent_test_harness"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "integration" / "edge_agent" / "agent_harness.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


harness = _harness()


@pytest.fixture
async def fleet(fresh_nats_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    fleet = await harness.Fleet(fresh_nats_url, tmp_path).open()
    try:
        yield fleet
    finally:
        await fleet.close()


def ticks(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("tick ")]


async def stored_lines(fleet: Any, device: str, app: str) -> list[str]:
    msgs = await harness.stream_messages(fleet.js, "SDV_LOGS", f"sdv.logs.{device}.{app}.stdout")
    return [m.data.decode() for m in msgs]


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_agent_restart_re_adopts_running_apps_without_duplicates(fleet: Any, tmp_path: Path, how: str) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    device = f"car-re-{how}"
    agent = fleet.agent(device, SDV_AGENT_RESTART_BASE_S="0.1")
    await fleet.desire(device, 1, {"ticker": pkg})
    before = await fleet.until_state(device, "ticker", "RUNNING", healthy=True)

    agent.stop(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    await asyncio.sleep(0.5)  # the app keeps printing while no agent runs
    assert [p.pid for p in harness.processes_under(agent.data_dir)] == [before.pid]
    agent.start()
    await fleet.until(lambda: "re_adopted" in agent.log(), what="re-adoption in the agent log")

    # Same process, no second copy, and no lost or repeated console line across the gap.
    await asyncio.sleep(1.0)
    assert [p.pid for p in harness.processes_under(agent.data_dir)] == [before.pid]
    after = await fleet.until_state(device, "ticker", "RUNNING", healthy=True)
    assert after.pid == before.pid
    assert after.restarts == 0
    lines = await stored_lines(fleet, device, "ticker")
    assert ticks(lines) == list(range(1, len(ticks(lines)) + 1))
    assert len(fleet.find_facts(device, "AppStarted")) == 1

    # The re-adopted process is still supervised: killing it gets it restarted.
    os.kill(before.pid, signal.SIGKILL)
    await fleet.until(lambda: len(fleet.find_facts(device, "AppStarted")) == 2, what="restart after kill")
    [proc] = harness.processes_under(agent.data_dir)
    assert proc.pid != before.pid


async def test_app_that_died_while_the_agent_was_down_is_started_again(fleet: Any, tmp_path: Path) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    agent = fleet.agent("car-gone")
    await fleet.desire("car-gone", 1, {"ticker": pkg})
    before = await fleet.until_state("car-gone", "ticker", "RUNNING", healthy=True)
    agent.stop()
    os.killpg(before.pid, signal.SIGTERM)  # it prints "bye" with no agent watching
    await asyncio.sleep(0.3)
    agent.start()
    await fleet.until(lambda: len(fleet.find_facts("car-gone", "AppHealthy")) == 2, what="healthy again")
    after = await fleet.until_state("car-gone", "ticker", "RUNNING", healthy=True)
    assert after.pid != before.pid
    # The last words of the process that ended while no agent ran were still collected.
    await fleet.until(lambda: "bye" in fleet.lines("car-gone", "ticker"), what="bye")


async def test_nats_outage_loses_no_console_line_and_no_fact(fresh_nats_server: NatsServer, tmp_path: Path) -> None:
    fleet = await harness.Fleet(fresh_nats_server.url, tmp_path).open()
    try:
        pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
        agent = fleet.agent("car-out", SDV_AGENT_RESTART_BASE_S="0.1", TICK_S="0.02")
        await fleet.desire("car-out", 1, {"ticker": pkg})
        first = await fleet.until_state("car-out", "ticker", "RUNNING", healthy=True)

        fresh_nats_server.stop(keep_data=True)
        await asyncio.sleep(1.0)
        os.kill(first.pid, signal.SIGKILL)  # a crash while offline: its restart is a fact to report
        await asyncio.sleep(9.0)
        fresh_nats_server.start()

        await fleet.until(lambda: _restarted(fleet, "car-out"), timeout=20, what="restart fact after outage")
        # Every line printed during the outage reached SDV_LOGS, once, in order — across the crash too.
        await asyncio.sleep(1.5)
        lines = await stored_lines(fleet, "car-out", "ticker")
        banners = [i for i, line in enumerate(lines) if line.startswith("ticker 1.0.0")]
        assert len(banners) == 2
        runs = [ticks(lines[banners[0]:banners[1]]), ticks(lines[banners[1]:])]
        for run in runs:
            assert run == list(range(1, len(run) + 1))
        assert len(runs[1]) > 200  # ~50 lines/s for most of the outage and after
        assert agent.log().count("nats_reconnected") >= 1
    finally:
        await fleet.close()


async def _restarted(fleet: Any, device: str) -> bool:
    msgs = await harness.stream_messages(fleet.js, "SDV_EVENTS", f"sdv.evt.agent.{device}.AppStarted")
    return len(msgs) == 2


async def test_offline_device_goes_straight_to_the_newest_desired_revision(fleet: Any, tmp_path: Path) -> None:
    v1, v2, v3 = [await fleet.publish(harness.make_app(tmp_path, "svc", v, harness.ticker_source("svc")))
                  for v in ("1.0.0", "2.0.0", "3.0.0")]
    agent = fleet.agent("car-off")
    await fleet.desire("car-off", 1, {"svc": v1})
    await fleet.until_state("car-off", "svc", "RUNNING", healthy=True, version="1.0.0")
    agent.stop()
    await fleet.desire("car-off", 2, {"svc": v2})
    await fleet.desire("car-off", 3, {"svc": v3})
    agent.start()
    rep = await fleet.until_state("car-off", "svc", "RUNNING", healthy=True, version="3.0.0")
    assert rep.previous_version == "1.0.0"
    await asyncio.sleep(0.5)
    assert not fleet.find_facts("car-off", "AppDownloadStarted", version="2.0.0")
    assert (await fleet.reported("car-off")).desired_revision == 3
    # The previous version stays installed for rollback; nothing older than that.
    kept = sorted(p.name.split("-")[0] for p in (agent.data_dir / "apps" / "svc").iterdir())
    assert kept == ["1.0.0", "3.0.0"]
    # A redelivered or older document changes nothing.
    await fleet.desire("car-off", 2, {"svc": v2})
    await asyncio.sleep(0.5)
    assert (await fleet.reported("car-off")).apps["svc"].version == "3.0.0"
