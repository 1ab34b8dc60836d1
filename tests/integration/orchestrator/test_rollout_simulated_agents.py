"""Rollouts end to end with SIMULATED agents (tests/integration/orchestrator/fleet_harness.py):
real NATS, real PostgreSQL, the real packager, registry and orchestrator services in-process;
the agents only watch their desired state and answer with facts."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)


async def test_canary_to_20_simulated_agents_all_healthy_completes(suite: Any) -> None:
    started = time.monotonic()
    agents = await suite.add_agents(20)
    v1 = await suite.publish("fleet-app", "1.0.0")
    view = await suite.create(v1, selector="fleet=sim", waves=["1", "10%", "50%", "100%"])
    assert [w.size for w in view.waves] == [1, 1, 8, 10]
    done = await suite.wait_status(view.rollout_id, "completed")
    assert [(w.succeeded, w.failed, w.state) for w in done.waves] == [
        (1, 0, "completed"), (1, 0, "completed"), (8, 0, "completed"), (10, 0, "completed")]
    for agent in agents:
        doc = await suite.desired(agent.device_id)
        assert doc is not None
        assert doc.apps["fleet-app"].package.digest == v1.digest
    print(f"took {time.monotonic() - started:.1f}s")
