"""A retried `create` (same command id) on the real orchestrator: without a `rollout_id` it gets
the first attempt's rollout instead of making a second one; with another body it is a Conflict."""

from __future__ import annotations

from typing import Any

import pytest

from sdv_events.bus import Conflict
from sdv_events.schemas.rollouts import CreateRolloutRequest, RolloutView, Target
from sdv_events.store import EventStore


async def rollout_streams(suite: Any) -> list[str]:
    """Every rollout the orchestrator stored (its event store, not the catalog that may lag)."""
    store = await EventStore.open(suite.database_url, suite.orchestrator_schema)
    try:
        return await store.stream_ids("rollout")
    finally:
        await store.close()


async def test_retried_create_without_a_rollout_id_returns_the_same_rollout(suite: Any) -> None:
    await suite.add_agents(2, prefix="idem", labels={"fleet": "idem"})
    package = await suite.publish("idem-app", "1.0.0")
    request = CreateRolloutRequest(package=package.name, version=package.version,
                                   target=Target(selector="fleet=idem"), start=False)

    first = await suite.commands.call("orchestrator", "create", request, RolloutView,
                                      command_id="create-once")
    again = await suite.commands.call("orchestrator", "create", request, RolloutView,
                                      command_id="create-once")

    assert again == first  # the same rollout, the same view
    assert await rollout_streams(suite) == [f"rollout-{first.rollout_id}"]
    assert [e.type for e in await suite.events(first.rollout_id)] == ["orchestrator.RolloutCreated.v1"]


async def test_reused_create_command_id_with_another_body_is_a_conflict(suite: Any) -> None:
    await suite.add_agents(1, prefix="idc", labels={"fleet": "idc"})
    package = await suite.publish("idc-app", "1.0.0")
    request = CreateRolloutRequest(package=package.name, version=package.version,
                                   target=Target(selector="fleet=idc"), start=False)
    first = await suite.commands.call("orchestrator", "create", request, RolloutView,
                                      command_id="create-idc")

    with pytest.raises(Conflict):
        await suite.commands.call("orchestrator", "create",
                                  CreateRolloutRequest(package=package.name, version=package.version,
                                                       target=Target(selector="fleet=other"),
                                                       start=False),
                                  RolloutView, command_id="create-idc")

    assert (await suite.get(first.rollout_id)).target == Target(selector="fleet=idc")
