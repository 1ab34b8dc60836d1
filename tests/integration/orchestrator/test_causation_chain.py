"""Every event the orchestrator appends says what caused it and who acted: walking back from a
`RolloutAborted` leads, event by event, to the device's fact on the bus that crossed the error
threshold; every event of the rollout carries the rollout's correlation id; the operator acts in
what their command caused, `system` in what devices' facts and the ticker caused. Real services;
SIMULATED agents (their facts published on the bus as the edge agent publishes them)."""

from __future__ import annotations

from typing import Any

from sdv_events.codec import decode_envelope
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.schemas.agent import AppFailed
from sdv_events.schemas.rollouts import DeviceFailed, RollbackStarted, RolloutAborted, RolloutCreated
from sdv_events.subjects import agent_fact_subject

APP = "chain-app"


async def test_the_causation_chain_of_an_abort_leads_back_to_the_failing_devices_fact(suite: Any) -> None:
    agents = await suite.add_agents(4, prefix="ch", labels={"fleet": "ch"})
    agents[2].script["1.0.0"] = "fail"
    package = await suite.publish(APP, "1.0.0")
    view = await suite.create(package, selector="fleet=ch", kind="all-at-once", error=0.2)
    await suite.wait_status(view.rollout_id, "rolled_back", "completed", timeout=20)
    events = await suite.events(view.rollout_id)
    by_id = {str(e.event_id): e for e in events}

    (aborted,) = [e for e in events if isinstance(e.data, RolloutAborted)]
    crossed = by_id[aborted.causation_id]  # the outcome that crossed the threshold …
    assert isinstance(crossed.data, DeviceFailed)
    assert crossed.data.device_id == "ch-02"
    assert crossed.causation_id == str(crossed.data.fact_id)  # … caused by the device's fact,
    js = suite.nc.jetstream()
    msg = await js.get_last_msg(EVENTS_STREAM, agent_fact_subject("ch-02", "agent.AppFailed.v1"))
    fact = decode_envelope(msg.data)
    assert str(fact.event_id) == crossed.causation_id  # … which is on the bus, as published
    assert isinstance(fact.data, AppFailed)
    assert fact.data.rollout_id == view.rollout_id
    (rollback,) = [e for e in events if isinstance(e.data, RollbackStarted)]
    assert rollback.causation_id == str(aborted.event_id)

    # Every event: a correlation (the create's), a cause, an actor.
    (created,) = [e for e in events if isinstance(e.data, RolloutCreated)]
    assert created.actor not in (None, "", "system")
    assert {e.correlation_id for e in events} == {created.correlation_id}
    assert all(e.causation_id for e in events), [(e.type, e.causation_id) for e in events]
    # The operator acted in the create's decision (created, planned, the wave started, its four
    # devices targeted); `system` in everything devices' facts and the ticker caused.
    first_decision = 1 + max(i for i, e in enumerate(events) if e.type.endswith("DeviceTargeted.v1"))
    assert {e.actor for e in events[:first_decision]} == {created.actor}
    assert {e.actor for e in events[first_decision:]} == {"system"}
