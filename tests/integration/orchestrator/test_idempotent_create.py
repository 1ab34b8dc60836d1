"""A retried `create` (same command id) on the real orchestrator: without a `rollout_id` it gets
the first attempt's rollout instead of making a second one; with another body it is a Conflict.
A create that cannot start (the registry down) stores nothing and says which service did not
answer; its retry makes the one rollout."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from sdv_client.cli import app as sdv
from sdv_events.bus import Conflict, ServiceUnavailable
from sdv_events.schemas.rollouts import CreateRolloutRequest, RolloutView, Target
from sdv_events.store import EventStore
from sdv_registry.app import serve as serve_registry
from sdv_registry.settings import RegistrySettings


def registry_settings(suite: Any) -> RegistrySettings:
    return RegistrySettings(
        service="registry", nats_url=suite.url, database_url=suite.database_url,
        schema_name=f"{suite.schema}_r", log_level="WARNING",
        heartbeat_silence_s=suite.heartbeat_silence_s)


def start_service(*args: Any) -> Any:
    return sys.modules["sdv_orchestrator_fleet_harness"].start_service(*args)  # conftest loaded it


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


async def test_a_create_with_the_registry_down_stores_nothing_and_its_retry_makes_one_rollout(
    suite: Any,
) -> None:
    await suite.add_agents(2, prefix="rd", labels={"fleet": "rd"})
    package = await suite.publish("rd-app", "1.0.0")
    request = CreateRolloutRequest(package=package.name, version=package.version,
                                   target=Target(selector="fleet=rd"))
    await suite.registry.stop()
    try:
        with pytest.raises(ServiceUnavailable) as down:
            await suite.commands.call("orchestrator", "create", request, RolloutView,
                                      command_id="create-rd")
    finally:
        suite.registry = await start_service("registry", serve_registry,
                                             registry_settings(suite), suite.nc)
    # The error names the service that did not answer, and that nothing was stored.
    assert down.value.details["service"] == "registry"
    assert "the registry did not answer" in down.value.message
    assert "nothing was stored" in down.value.message
    assert await rollout_streams(suite) == []

    retried = await suite.commands.call("orchestrator", "create", request, RolloutView,
                                        command_id="create-rd")
    again = await suite.commands.call("orchestrator", "create", request, RolloutView,
                                      command_id="create-rd")
    assert again.rollout_id == retried.rollout_id
    assert await rollout_streams(suite) == [f"rollout-{retried.rollout_id}"]
    done = await suite.wait_status(retried.rollout_id, "completed")
    assert done.succeeded_total == 2


async def test_the_cli_names_the_service_that_did_not_answer(suite: Any) -> None:
    await suite.add_agents(1, prefix="rc", labels={"fleet": "rc"})
    await suite.publish("rc-app", "1.0.0")
    await suite.registry.stop()
    try:
        result = await asyncio.to_thread(
            CliRunner().invoke, sdv, ["rollout", "create", "rc-app", "1.0.0", "-l", "fleet=rc",
                                      "--watch", "--json"],
            env={"SDV_NATS_URL": suite.url, "SDV_NATS_CREDS": "", "SDV_NATS_CA": ""})
    finally:
        suite.registry = await start_service("registry", serve_registry,
                                             registry_settings(suite), suite.nc)
    doc = json.loads(result.stdout)
    assert result.exit_code != 0
    assert (doc["ok"], doc["code"], doc["details"]["service"]) == (False, "unavailable", "registry")
    assert "(is the registry running" in doc["error"], doc["error"]
    assert await rollout_streams(suite) == []
