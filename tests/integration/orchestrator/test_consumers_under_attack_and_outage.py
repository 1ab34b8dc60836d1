"""The orchestrator's consumers (agents' facts, policies) against a hostile device and against
peers that are briefly away: bad facts are ignored without stalling anyone, and a release or an
acceptance seen while the packager or the registry is down is acted on once it is back — never
lost. Real packager, registry and orchestrator; SIMULATED agents (see fleet_harness.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sdv_events.codec import encode
from sdv_events.envelope import Envelope
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.schemas.agent import AppHealthy
from sdv_events.schemas.rollouts import ListRollouts, RolloutList, RolloutPolicy, Strategy, Target
from sdv_events.service import Ping, ServiceHealth
from sdv_events.subjects import agent_fact_subject
from sdv_packager.app import serve as serve_packager
from sdv_packager.settings import PackagerSettings
from sdv_registry.app import serve as serve_registry
from sdv_registry.settings import RegistrySettings


async def task_health(suite: Any, name: str) -> Any:
    health = await suite.commands.call("orchestrator", "ping", Ping(), ServiceHealth)
    return next(t for t in health.tasks if t.name == name)


async def rollouts_of(suite: Any, app: str) -> list[Any]:
    found = await suite.commands.call("orchestrator", "list", ListRollouts(app=app), RolloutList)
    return found.rollouts


async def on_the_bus(suite: Any, subject: str) -> None:
    """Until an event on `subject` was published (its service's relay ran)."""
    js = suite.nc.jetstream()

    async def published() -> bool:
        info = await js.stream_info(EVENTS_STREAM, subjects_filter=subject)
        return bool(info.state.subjects)

    assert await suite.eventually(published, timeout=15), f"nothing published on {subject}"


def packager_settings(suite: Any) -> PackagerSettings:
    return PackagerSettings(
        service="packager", nats_url=suite.url, database_url=suite.database_url,
        schema_name=f"{suite.schema}_p", signing_key_path=suite.tmp_path / "keys" / "packager.pem",
        wheels_offline=True, log_level="WARNING")


def registry_settings(suite: Any) -> RegistrySettings:
    return RegistrySettings(
        service="registry", nats_url=suite.url, database_url=suite.database_url,
        schema_name=f"{suite.schema}_r", log_level="WARNING", heartbeat_silence_s=3600.0)


async def test_facts_naming_an_invalid_rollout_id_neither_stall_nor_park_the_facts_consumer(
    suite: Any,
) -> None:
    agents = await suite.add_agents(3, prefix="atk", labels={"fleet": "atk"})
    package = await suite.publish("atk-app", "1.0.0")
    js = suite.nc.jetstream()
    # A hostile device reports on its own subject about a "rollout" whose id is no stream id.
    for n in range(5):
        body = AppHealthy(device_id="evil", app="atk-app", version="1.0.0", digest=package.digest,
                          desired_revision=1, rollout_id="NOT.VALID")
        envelope = Envelope(event_id=uuid.uuid4(), stream_id="agent-evil", version=n + 1,
                            type="agent.AppHealthy.v1", schema_version=1,
                            occurred_at=datetime.now(UTC), data=body)
        await js.publish(agent_fact_subject("evil", envelope.type), encode(envelope),
                         headers={"Nats-Msg-Id": f"evil-{n}"})
    view = await suite.create(package, selector="fleet=atk", waves=["100%"])
    done = await suite.wait_status(view.rollout_id, "completed", timeout=20)
    assert (done.devices_total, done.succeeded_total) == (len(agents), len(agents))
    facts = await task_health(suite, "agent_facts")
    assert facts.healthy, facts
    assert facts.detail["parked"] == 0  # ignored as an unknown rollout: nothing to park


async def test_a_release_seen_while_the_packager_is_down_starts_its_rollout_once_it_is_back(
    suite: Any,
) -> None:
    load = __import__("sdv_orchestrator_fleet_harness")
    agents = await suite.add_agents(2, prefix="pkgout", labels={"fleet": "pkgout"})
    policy = RolloutPolicy(name="pkgout", app="pkgout-app", channel="dev",
                           target=Target(selector="fleet=pkgout"), strategy=Strategy("canary", ["100%"]))
    await suite.commands.call("orchestrator", "set_policy", policy, RolloutPolicy)
    await suite.stop_orchestrator(suite.orchestrators[0])
    await suite.publish("pkgout-app", "1.0.0")  # lands on dev: the policy must fire
    await on_the_bus(suite, "sdv.evt.package.*.PackagePublished")
    await suite.packager.stop()

    # The orchestrator meets the release while the packager does not answer: it waits.
    await suite.start_orchestrator()

    async def waiting() -> Any:
        policies = await task_health(suite, "policies")
        return policies if policies.reason.startswith("waiting on sdv.cmd.packager.") else None

    policies = await suite.eventually(waiting, timeout=20)
    assert policies, await task_health(suite, "policies")
    assert not policies.healthy
    assert "ServiceUnavailable" in policies.reason
    assert await rollouts_of(suite, "pkgout-app") == []

    suite.packager = await load.start_service("packager", serve_packager, packager_settings(suite),
                                              suite.nc)

    async def completed() -> Any:
        found = await rollouts_of(suite, "pkgout-app")
        return found if found and found[0].status == "completed" else None

    done = await suite.eventually(completed, timeout=30)
    assert done, await rollouts_of(suite, "pkgout-app")
    assert (len(done), done[0].devices, done[0].succeeded) == (1, len(agents), len(agents))
    after = await task_health(suite, "policies")
    assert after.healthy, after
    assert after.detail["parked"] == 0


async def test_an_acceptance_seen_while_the_registry_is_down_still_gets_the_fleet_version(
    suite: Any,
) -> None:
    load = __import__("sdv_orchestrator_fleet_harness")
    await suite.add_agents(2, prefix="regout", labels={"fleet": "regout"})
    policy = RolloutPolicy(name="regout", app="regout-app", channel="dev",
                           target=Target(selector="fleet=regout"), strategy=Strategy("canary", ["100%"]))
    await suite.commands.call("orchestrator", "set_policy", policy, RolloutPolicy)
    await suite.publish("regout-app", "1.0.0")

    async def completed() -> Any:
        found = await rollouts_of(suite, "regout-app")
        return found if found and found[0].status == "completed" else None

    assert await suite.eventually(completed, timeout=30), await rollouts_of(suite, "regout-app")

    # A device is accepted while the orchestrator is away; then the registry goes away too.
    await suite.stop_orchestrator(suite.orchestrators[0])
    [late] = await suite.add_agents(1, prefix="regout-late", labels={"fleet": "regout"})
    await on_the_bus(suite, f"sdv.evt.device.{late.device_id}.DeviceAccepted")
    await suite.registry.stop()
    await suite.start_orchestrator()

    async def waiting() -> Any:
        policies = await task_health(suite, "policies")
        return policies if policies.reason.startswith("waiting on sdv.cmd.registry.get") else None

    policies = await suite.eventually(waiting, timeout=20)
    assert policies, await task_health(suite, "policies")
    assert not policies.healthy

    suite.registry = await load.start_service("registry", serve_registry, registry_settings(suite),
                                              suite.nc)

    async def assigned() -> Any:
        desired = await suite.desired(late.device_id)
        return desired if desired and "regout-app" in desired.apps else None

    desired = await suite.eventually(assigned, timeout=30)
    assert desired, "the device accepted during the outage never got the fleet's version"
    assert desired.apps["regout-app"].package.version == "1.0.0"
    after = await task_health(suite, "policies")
    assert after.healthy, after
    assert after.detail["parked"] == 0
