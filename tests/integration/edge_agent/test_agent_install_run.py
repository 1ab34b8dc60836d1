"""Install → run → console on the bus, with real signed packages and a real agent process."""

from __future__ import annotations

from pathlib import Path
from typing import Any


async def test_desired_app_is_installed_started_healthy_and_its_stdout_streams(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    agent = fleet.agent("car-1")
    await fleet.desire("car-1", 1, {"ticker": pkg})

    await fleet.fact("car-1", "AppHealthy", app="ticker")
    assert fleet.fact_types("car-1", "ticker")[:4] == ["AppDownloadStarted", "AppInstalled", "AppStarted",
                                                       "AppHealthy"]
    started = await fleet.fact("car-1", "AppStarted", app="ticker")
    assert started.stream_id == "agent-car-1"
    assert started.data.desired_revision == 1
    assert started.data.digest == pkg.digest
    rep = await fleet.until_state("car-1", "ticker", "RUNNING", healthy=True)
    assert rep.version == "1.0.0"
    assert rep.pid == started.data.pid

    # Console lines arrive on the bus within 100 ms of being printed (they carry their print time).
    await fleet.until(lambda: len(fleet.lines("car-1", "ticker")) > 20, what="20 ticks on the bus")
    received = {m.line: m.received for m in fleet.logs if m.subject == "sdv.logs.car-1.ticker.stdout"}
    delays = sorted(received[line] - float(line.split()[2]) for line in received if line.startswith("tick "))
    assert delays[len(delays) // 2] < 0.1, delays
    print("console delay p50 %.1f ms, max %.1f ms" % (delays[len(delays) // 2] * 1000, delays[-1] * 1000))
    assert fleet.lines("car-1", "ticker")[0].startswith("ticker 1.0.0")
    # Every line exactly once, in order.
    ticks = [int(line.split()[1]) for line in fleet.lines("car-1", "ticker") if line.startswith("tick ")]
    assert ticks == list(range(1, len(ticks) + 1))
    # Versions of the device's fact stream count up from 1, with no gap.
    versions = [f.version for f in fleet.facts if f.stream_id == "agent-car-1"]
    assert versions == list(range(1, len(versions) + 1))
    assert "Traceback" not in agent.log()
