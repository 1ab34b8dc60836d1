"""Download now, activate later, on real agents (native runtime, real NATS, signed packages and
desired documents): a gated or held version is downloaded, verified and staged beside the running
one, and switched to only when its gates hold on live vehicle signals or a newer document drops
the hold (issue 15).

The vehicle signals come from a STAND-IN KUKSA databroker (tests/integration/vehicle_support.py
`PushingDatabroker`: kuksa-client's own kuksa.val.v1 protos, pushing each change to its
subscribers), because the real databroker cannot run here (FACTS.md).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sdv_events.schemas.deployment import Activation, DesiredApp
from sdv_events.schemas.packages import PackageInfo

vehicle = sys.modules["sdv_vehicle_test_support"]  # tests/integration/vehicle_support.py
SPEED = "Vehicle.Speed"
STOPPED = [f"{SPEED} == 0"]


@pytest.fixture
async def databroker() -> AsyncIterator[Any]:
    stand_in = await vehicle.PushingDatabroker({SPEED: 50.0}).serve()
    try:
        yield stand_in
    finally:
        await stand_in.stop()


def gated(package: PackageInfo, rollout: str, gates: list[str] | None = None, *, hold: bool = False) -> DesiredApp:
    return DesiredApp(package=package, rollout_id=rollout,
                      activation=Activation(gates=STOPPED if gates is None else gates, hold=hold))


async def running_v1(fleet: Any, harness: Any, tmp_path: Path, device: str, databroker: Any | None = None,
                     versions: tuple[str, ...] = ("2.0.0",)) -> tuple[Any, list[PackageInfo]]:
    """An agent running version 1.0.0 of `svc`, and the packages of `versions`, published."""
    packages = [await fleet.publish(harness.make_app(tmp_path, "svc", v, harness.ticker_source("svc")))
                for v in ("1.0.0", *versions)]
    env = {"SDV_AGENT_DATABROKER": databroker.address} if databroker is not None else {}
    agent = fleet.agent(device, **env)
    await fleet.desire(device, 1, {"svc": packages[0]})
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="1.0.0", timeout=30)
    return agent, packages


def started(fleet: Any, device: str, version: str) -> list[Any]:
    return fleet.find_facts(device, "AppStarted", app="svc", version=version)


async def test_stand_in_speed_50_stages_the_new_version_and_it_activates_within_a_second_of_stopping(
    fleet: Any, harness: Any, tmp_path: Path, databroker: Any
) -> None:
    device = "car-gate"
    agent, (_, v2) = await running_v1(fleet, harness, tmp_path, device, databroker)
    before = await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="1.0.0")
    await fleet.desire(device, 2, {"svc": gated(v2, "r2")})

    staged = await fleet.fact(device, "AppStaged", version="2.0.0", timeout=30)
    assert staged.data.rollout_id == "r2"
    deferred = await fleet.fact(device, "ActivationDeferred", version="2.0.0", value=50.0)
    assert deferred.data.rollout_id == "r2"
    assert (deferred.data.gate, deferred.data.signal, deferred.data.held) == (f"{SPEED} == 0", SPEED, False)
    assert deferred.data.reason == f"waiting for {SPEED} == 0: {SPEED} is 50"
    await asyncio.sleep(1.5)  # the vehicle keeps moving: nothing switches
    now = await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="1.0.0")
    assert now.pid == before.pid, "the running version must be left untouched"
    assert not started(fleet, device, "2.0.0")
    assert len(fleet.find_facts(device, "ActivationDeferred", value=50.0)) == 1, "reported once, not per update"

    stopped_at = time.time()
    await databroker.set(SPEED, 0.0)
    switched = await fleet.fact(device, "AppStarted", version="2.0.0", timeout=10)
    seen_after = time.time() - stopped_at
    started_after = switched.occurred_at.timestamp() - stopped_at
    assert seen_after < 1.0, f"v2 started {started_after:.3f} s (fact seen {seen_after:.3f} s) after the stop"
    print(f"\nactivation: AppStarted {started_after * 1000:.0f} ms after the speed became 0 (received "
          f"{seen_after * 1000:.0f} ms)")
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="2.0.0", timeout=15)
    order = [(f.type.split(".")[1], f.data.version) for f in fleet.facts if f.data.device_id == device]
    assert order.count(("AppDownloadStarted", "2.0.0")) == 1
    assert (order.index(("AppDownloadStarted", "2.0.0")) < order.index(("AppStaged", "2.0.0"))
            < order.index(("ActivationDeferred", "2.0.0")) < order.index(("AppInstalled", "2.0.0"))
            < order.index(("AppStopped", "1.0.0")) < order.index(("AppStarted", "2.0.0")))
    assert all(f.data.rollout_id == "r2" for f in fleet.facts
               if f.data.device_id == device and f.data.version == "2.0.0")
    assert "activation_gates_hold" in agent.log()


async def test_a_held_version_is_staged_and_a_newer_document_without_the_hold_switches_at_once(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    device = "car-hold"
    _, (_, v2) = await running_v1(fleet, harness, tmp_path, device)
    await fleet.desire(device, 2, {"svc": gated(v2, "r2", [], hold=True)})
    await fleet.fact(device, "AppStaged", version="2.0.0", timeout=30)
    held = await fleet.fact(device, "ActivationDeferred", version="2.0.0")
    assert (held.data.held, held.data.reason, held.data.rollout_id) == (True, "held until activated", "r2")
    assert (held.data.gate, held.data.signal, held.data.value) == (None, None, None)
    await asyncio.sleep(1.5)
    assert not started(fleet, device, "2.0.0")
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="1.0.0")

    written = time.monotonic()
    await fleet.desire(device, 3, {"svc": DesiredApp(package=v2, rollout_id="r2")})  # the hold cleared
    await fleet.fact(device, "AppStarted", version="2.0.0", timeout=10)
    switch_s = time.monotonic() - written
    assert switch_s < 2.0, f"the switch took {switch_s:.2f} s after the hold was cleared"
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="2.0.0", timeout=15)
    assert len(fleet.find_facts(device, "AppDownloadStarted", version="2.0.0")) == 1, "downloaded once"
    assert len(fleet.find_facts(device, "AppStaged", version="2.0.0")) == 1
    assert len(fleet.find_facts(device, "ActivationDeferred")) == 1


async def test_stand_in_databroker_stopped_defers_with_no_value_until_it_answers_again(
    fleet: Any, harness: Any, tmp_path: Path, databroker: Any
) -> None:
    device = "car-nodb"
    _, (_, v2) = await running_v1(fleet, harness, tmp_path, device, databroker)
    await fleet.desire(device, 2, {"svc": gated(v2, "r2")})
    await fleet.fact(device, "ActivationDeferred", version="2.0.0", value=50.0, timeout=30)

    await databroker.stop()
    lost = await fleet.fact(device, "ActivationDeferred", version="2.0.0", value=None, timeout=15)
    assert lost.data.signal == SPEED
    assert lost.data.reason == (f"waiting for {SPEED} == 0: the vehicle databroker does not answer, "
                                f"so {SPEED} has no value")
    await asyncio.sleep(1.0)
    assert not started(fleet, device, "2.0.0")
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="1.0.0")

    await databroker.serve()  # back, on the same port, with the vehicle stopped now
    await databroker.set(SPEED, 0.0)
    await fleet.fact(device, "AppStarted", version="2.0.0", timeout=20)
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="2.0.0", timeout=15)


async def test_stand_in_agent_restart_while_staged_waits_on_without_downloading_again(
    fleet: Any, harness: Any, tmp_path: Path, databroker: Any
) -> None:
    device = "car-restart"
    agent, (_, v2) = await running_v1(fleet, harness, tmp_path, device, databroker)
    await fleet.desire(device, 2, {"svc": gated(v2, "r2")})
    await fleet.fact(device, "ActivationDeferred", version="2.0.0", value=50.0, timeout=30)
    pid = (await fleet.until_state(device, "svc", "RUNNING", version="1.0.0")).pid

    agent.stop()
    agent.start()
    await fleet.until(lambda: "staged_version_kept" in agent.log(), timeout=15, what="the staged version kept")
    await asyncio.sleep(2.0)
    assert not started(fleet, device, "2.0.0")
    assert (await fleet.until_state(device, "svc", "RUNNING", version="1.0.0")).pid == pid  # re-adopted

    await databroker.set(SPEED, 0.0)
    await fleet.fact(device, "AppStarted", version="2.0.0", timeout=10)
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="2.0.0", timeout=15)
    assert len(fleet.find_facts(device, "AppDownloadStarted", version="2.0.0")) == 1, "no second download"
    assert len(fleet.find_facts(device, "AppStaged", version="2.0.0")) == 1


async def test_stand_in_newer_documents_supersede_the_wait_and_leave_no_wait_behind(
    fleet: Any, harness: Any, tmp_path: Path, databroker: Any
) -> None:
    device = "car-supersede"
    agent, (v1, v2, v3) = await running_v1(fleet, harness, tmp_path, device, databroker, ("2.0.0", "3.0.0"))
    versions = agent.data_dir / "apps" / "svc"
    await fleet.desire(device, 2, {"svc": gated(v2, "r2")})
    await fleet.fact(device, "ActivationDeferred", version="2.0.0", value=50.0, timeout=30)

    # Other gates for the same version: judged anew on the staged files.
    await fleet.desire(device, 3, {"svc": gated(v2, "r2", [f"{SPEED} <= 10"])})
    changed = await fleet.fact(device, "ActivationDeferred", version="2.0.0", gate=f"{SPEED} <= 10")
    assert changed.data.desired_revision == 3
    assert len(fleet.find_facts(device, "AppDownloadStarted", version="2.0.0")) == 1

    # Another version: staged in place of the first.
    await fleet.desire(device, 4, {"svc": gated(v3, "r4")})
    await fleet.fact(device, "AppStaged", version="3.0.0", timeout=30)
    await fleet.fact(device, "ActivationDeferred", version="3.0.0", value=50.0)
    assert sorted(p.name.split("-")[0] for p in versions.iterdir()) == ["1.0.0", "3.0.0"]

    # Back to the running version: nothing staged, nothing waits.
    await fleet.desire(device, 5, {"svc": DesiredApp(package=v1, rollout_id="r5")})
    await fleet.until(lambda: sorted(p.name.split("-")[0] for p in versions.iterdir()) == ["1.0.0"],
                      what="the staged version removed")
    await fleet.fact(device, "AppAlreadyCurrent", rollout_id="r5")
    assert agent.process is not None
    agent.process.send_signal(signal.SIGUSR2)  # the agent dumps its asyncio tasks to its log
    await fleet.until(lambda: "--- task link" in agent.log(), what="the task dump")
    assert "--- task gates:" not in agent.log(), "a superseded wait must not outlive its version"
    await databroker.set(SPEED, 0.0)
    await asyncio.sleep(1.5)
    assert not started(fleet, device, "2.0.0")
    assert not started(fleet, device, "3.0.0")
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="1.0.0")


async def test_stand_in_a_first_install_waits_for_its_gates_too(
    fleet: Any, harness: Any, tmp_path: Path, databroker: Any
) -> None:
    device = "car-first"
    v1 = await fleet.publish(harness.make_app(tmp_path, "svc", "1.0.0", harness.ticker_source("svc")))
    agent = fleet.agent(device, SDV_AGENT_DATABROKER=databroker.address)
    await fleet.desire(device, 1, {"svc": gated(v1, "r1")})
    await fleet.fact(device, "AppStaged", version="1.0.0", timeout=30)
    await fleet.fact(device, "ActivationDeferred", version="1.0.0", value=50.0)
    waiting = await fleet.until_state(device, "svc", "INSTALLING", version="1.0.0")
    assert waiting.pid is None
    assert not harness.processes_under(agent.data_dir)
    await databroker.set(SPEED, 0.0)
    await fleet.fact(device, "AppStarted", version="1.0.0", timeout=10)
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="1.0.0", timeout=15)
    assert fleet.fact_types(device, "svc")[:4] == ["AppDownloadStarted", "AppStaged", "ActivationDeferred",
                                                   "AppInstalled"]


async def test_stand_in_a_gate_that_flips_back_during_the_switch_does_not_stop_it(
    fleet: Any, harness: Any, tmp_path: Path, databroker: Any
) -> None:
    device = "car-flip"
    agent, (_, v2) = await running_v1(fleet, harness, tmp_path, device, databroker)
    await fleet.desire(device, 2, {"svc": gated(v2, "r2")})
    await fleet.fact(device, "ActivationDeferred", version="2.0.0", value=50.0, timeout=30)
    await databroker.set(SPEED, 0.0)
    async with asyncio.timeout(10):
        while "activation_gates_hold" not in agent.log():  # noqa: ASYNC110 — the agent's log file
            await asyncio.sleep(0.002)
    await databroker.set(SPEED, 50.0)  # moving again while the agent switches
    await fleet.fact(device, "AppStarted", version="2.0.0", timeout=10)
    await fleet.until_state(device, "svc", "RUNNING", healthy=True, version="2.0.0", timeout=15)
    await asyncio.sleep(1.0)
    assert len(fleet.find_facts(device, "ActivationDeferred")) == 1, "a finished switch is not deferred again"
    assert (await fleet.reported(device)).apps["svc"].version == "2.0.0"
