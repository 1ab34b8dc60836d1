"""The orchestrator stopped mid-wave and restarted, and two orchestrator replicas on one schema,
with SIMULATED agents (fleet_harness.py): the outcome is the one a single undisturbed run gives —
every device targeted once, every report counted once, desired revisions only increasing.
(A kill -9 of an orchestrator process is in tests/reliability/test_orchestrator_kill.py.)"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from sdv_orchestrator.adapters import facts

pytestmark = pytest.mark.timeout(30)
APP = "fleet-app"


async def test_orchestrator_stopped_mid_wave_and_restarted_finishes_the_same_simulated_rollout(
    suite: Any,
) -> None:
    agents = await suite.add_agents(20)
    for agent in agents:
        agent.delay_s = (0.05, 0.6)
    v1 = await suite.publish(APP, "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", waves=["2", "50%", "100%"])

    async def mid_wave_2() -> bool:
        current = await suite.get(view.rollout_id)
        return current.current_wave == 1 and current.waves[1].succeeded >= 2

    assert await suite.eventually(mid_wave_2, timeout=15, interval=0.02)
    await suite.stop_orchestrator(suite.orchestrators[0])
    await asyncio.sleep(1.0)  # agents keep answering while no orchestrator runs
    await suite.start_orchestrator()
    await suite.assert_clean_completion(view.rollout_id, sorted(suite.agents), v1.digest, APP)


async def test_two_orchestrator_replicas_complete_one_simulated_rollout_without_conflicting_decisions(
    suite: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    handled_by: Counter[int] = Counter()  # facts per replica (its Orchestrator object)
    original = facts.AgentFacts.handle

    async def counting(self: facts.AgentFacts, events: Any) -> None:
        handled_by[id(self.orchestrator)] += len(events)
        await original(self, events)

    monkeypatch.setattr(facts.AgentFacts, "handle", counting)
    await suite.start_orchestrator()  # a second replica on the same schema
    agents = await suite.add_agents(20)
    for agent in agents:
        agent.delay_s = (0.0, 0.3)
    v1 = await suite.publish(APP, "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", waves=["2", "50%", "100%"])
    # Operators' reads and the replicas' ticks and reports interleave on one stream.
    for _ in range(5):
        await asyncio.gather(*(suite.get(view.rollout_id) for _ in range(4)))
        await asyncio.sleep(0.1)
    await suite.assert_clean_completion(view.rollout_id, sorted(suite.agents), v1.digest, APP)
    # The facts consumer has one leader at a time (its dedupe ledger has one writer); the other
    # replica stands by, while both tick the rollout and answer reads on the same stream.
    assert len(handled_by) == 1, handled_by
