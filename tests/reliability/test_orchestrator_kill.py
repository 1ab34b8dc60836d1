"""The orchestrator as a real process (`python -m sdv_orchestrator`), killed with SIGKILL at random
moments of a canary rollout to SIMULATED agents and started again each time: the rollout ends as
an undisturbed run would — completed, every device targeted once and counted once, catalog
counts exact, desired-state revisions only increasing (a document re-written after a kill is
the very document of a revision the agent already had)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
APP = "fleet-app"


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


@pytest.fixture
async def suite(fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path) -> AsyncIterator[Any]:
    async with _harness().running_suite(fresh_nats_url, database_url, schema, tmp_path,
                                        orchestrator=False) as s:
        yield s


async def test_orchestrator_killed_repeatedly_mid_rollout_finishes_simulated_rollout_exactly_once(
    suite: Any, tmp_path: Path,
) -> None:
    process = _harness().OrchestratorProcess(suite, tmp_path / "orchestrator.log")
    await process.start()
    try:
        agents = await suite.add_agents(20)
        for agent in agents:
            agent.delay_s = (0.05, 1.0)
        v1 = await suite.publish(APP, "1.0.0")
        view = await suite.create(v1, selector="fleet=sim", waves=["2", "50%", "100%"], device_s=90.0)
        seed = int(os.environ.get("SDV_TEST_SEED") or random.randrange(1 << 30))
        print(f"kill schedule seed {seed} (SDV_TEST_SEED={seed} repeats it)")
        rng = random.Random(seed)
        kills = 0
        while kills < 4 and (await suite.get(view.rollout_id)).status == "running":
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            await process.kill()
            kills += 1
            await asyncio.sleep(rng.uniform(0.0, 0.5))  # agents answer into the void meanwhile
            await process.start()
        assert kills >= 2, "the rollout finished before the orchestrator could be killed twice"
        await suite.assert_clean_completion(view.rollout_id, sorted(suite.agents), v1.digest, APP,
                                            timeout=90)
    finally:
        await process.terminate()
