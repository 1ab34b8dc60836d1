"""An outage longer than the device timeout never turns successes into timeouts (issue 14).

Devices report healthy 5 s into a rollout with a 20 s device timeout, while the orchestrator
process is killed and held down 30 s — and, separately, while PostgreSQL is stopped for 30 s.
When it is back the rollout completes: each device counts by when it reported (its fact's
occurrence time), not by when the orchestrator got to it, and no device was timed out while
its fact waited. Real packager, registry and orchestrator (a real process for the kill, with its
default clock-skew tolerance and reconnect grace), real NATS and PostgreSQL (a private one
for the stop); SIMULATED agents (fleet_harness.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sdv_events.schemas.rollouts import DeviceSucceeded, DeviceTargeted, DeviceTimedOut
from sdv_events.servers import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
APP = "outage-app"
DEVICE_S = 20.0
OUTAGE_S = 30.0
REPORT_AFTER_S = 5.0


def _harness() -> ModuleType:
    name = "sdv_orchestrator_fleet_harness"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "integration" / "orchestrator" / "fleet_harness.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


async def targeted_and_seen(suite: Any, gate: asyncio.Event) -> Any:
    """Four devices, the rollout created, each device holding its desired document (its
    answer held by `gate`)."""
    agents = await suite.add_agents(4, prefix="out", labels={"fleet": "out"})
    for agent in agents:
        agent.gate = gate
    package = await suite.publish(APP, "1.0.0")
    view = await suite.create(package, selector="fleet=out", kind="all-at-once", device_s=DEVICE_S)

    async def all_seen() -> bool:
        return all(
            any(APP in d.apps and d.apps[APP].rollout_id == view.rollout_id for d in a.docs) for a in agents
        )

    await _harness().until(all_seen, 20, "every device to see its desired document")
    return view


async def assert_completed_without_timeouts(suite: Any, rollout_id: str, outage_began: float) -> None:
    done = await suite.wait_status(rollout_id, "completed", "rolled_back", "aborted", timeout=60)
    events = await suite.events(rollout_id)
    assert done.status == "completed", (done.reason, [e.type for e in events])
    assert not [e for e in events if isinstance(e.data, DeviceTimedOut)]
    succeeded = [e.data for e in events if isinstance(e.data, DeviceSucceeded)]
    assert len(succeeded) == 4
    # The point: every device's deadline passed during the outage, its report before it.
    deadline = next(e.data.deadline for e in events if isinstance(e.data, DeviceTargeted))
    assert all(s.observed_at is not None and s.observed_at <= deadline for s in succeeded)
    assert time.monotonic() - outage_began > DEVICE_S


@pytest.fixture
async def suite_without_orchestrator(
    fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path
) -> AsyncIterator[Any]:
    async with _harness().running_suite(
        fresh_nats_url, database_url, schema, tmp_path, orchestrator=False
    ) as s:
        yield s


async def test_orchestrator_killed_and_held_down_30s_with_a_20s_timeout_completes_the_rollout(
    suite_without_orchestrator: Any,
    tmp_path: Path,
) -> None:
    suite = suite_without_orchestrator
    process = _harness().OrchestratorProcess(suite, tmp_path / "orchestrator.log")
    await process.start()
    try:
        gate = asyncio.Event()
        view = await targeted_and_seen(suite, gate)
        await process.kill()
        down_since = time.monotonic()
        await asyncio.sleep(REPORT_AFTER_S)
        gate.set()  # devices report healthy into the void, 15 s before their deadline
        await asyncio.sleep(OUTAGE_S - REPORT_AFTER_S)
        await process.start()
        await assert_completed_without_timeouts(suite, view.rollout_id, down_since)
    finally:
        await process.terminate()


@pytest.fixture
def private_postgres() -> Any:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


async def test_postgresql_stopped_30s_with_a_20s_timeout_completes_the_rollout(
    private_postgres: PostgresServer,
    fresh_nats_url: str,
    schema: str,
    tmp_path: Path,
) -> None:
    async with _harness().running_suite(fresh_nats_url, private_postgres.url, schema, tmp_path) as suite:
        gate = asyncio.Event()
        view = await targeted_and_seen(suite, gate)
        await asyncio.to_thread(private_postgres.stop, keep_data=True)
        down_since = time.monotonic()
        await asyncio.sleep(REPORT_AFTER_S)
        gate.set()
        await asyncio.sleep(OUTAGE_S - REPORT_AFTER_S)
        await asyncio.to_thread(private_postgres.start)
        await assert_completed_without_timeouts(suite, view.rollout_id, down_since)
