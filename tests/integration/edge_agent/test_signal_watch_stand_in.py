"""The agent's view of live vehicle signals for activation gates (adapters/vehicle_signals.py),
against a *stand-in* KUKSA databroker: the real one is a Rust binary that cannot run here
(FACTS.md), so a gRPC server built from kuksa-client's own `kuksa.val.v1` protos plays it,
pushing each change of the values it holds to its subscribers."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sdv_edge_agent.adapters.vehicle_signals import SignalWatch
from sdv_events.gates import parse_gates

vehicle = sys.modules["sdv_vehicle_test_support"]  # tests/integration/vehicle_support.py
SPEED = "Vehicle.Speed"
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"


@pytest.fixture
async def broker() -> AsyncIterator[Any]:
    databroker = await vehicle.PushingDatabroker({SPEED: 50.0, SOC: 80.0}).serve()
    try:
        yield databroker
    finally:
        await databroker.stop()


@pytest.fixture
async def watch(broker: Any) -> AsyncIterator[SignalWatch]:
    watch = SignalWatch(lambda: ("127.0.0.1", broker.port))
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_gate_opens_within_moments_of_the_vehicle_stopping(broker: Any, watch: SignalWatch) -> None:
    databroker = broker
    gates = parse_gates([f"{SPEED} == 0", f"{SOC} >= 30"])
    deferred: list[str] = []
    waiting = asyncio.create_task(watch.wait_until(gates, 10.0, lambda v: deferred.append(v.reason)))
    await asyncio.sleep(1.0)
    assert not waiting.done()
    assert deferred[-1] == f"waiting for {SPEED} == 0: {SPEED} is 50"
    stopped_at = time.monotonic()
    await databroker.set(SPEED, 0.0)
    verdict = await waiting
    latency = time.monotonic() - stopped_at
    assert verdict.holds
    assert latency < 0.5, f"the gate opened {latency:.3f} s after the speed became 0"
    assert databroker.subscriptions == [sorted([SPEED, SOC])]  # one subscription, no polling


async def test_the_deadline_returns_the_verdict_that_held_the_switch_back(
    broker: Any, watch: SignalWatch
) -> None:
    verdict = await watch.wait_until(parse_gates([f"{SPEED} == 0"]), 1.0)
    assert not verdict.holds
    assert (verdict.signal, verdict.value) == (SPEED, 50.0)


async def test_a_lost_databroker_closes_the_gates_until_it_answers_again(
    broker: Any, watch: SignalWatch
) -> None:
    databroker = broker
    gates = parse_gates([f"{SPEED} == 0"])
    reasons: list[str] = []
    keep = asyncio.create_task(watch.wait_until(gates, 30.0, lambda v: reasons.append(v.reason)))
    async with asyncio.timeout(10):
        while not reasons or "is 50" not in reasons[-1]:  # noqa: ASYNC110 — the adapter's callback
            await asyncio.sleep(0.02)
    await databroker.stop()
    async with asyncio.timeout(10):  # the subscription notices the loss
        while watch.values or watch.last_error is None:  # noqa: ASYNC110 — polling the adapter's state
            await asyncio.sleep(0.05)
    assert not watch.values, "values seen before the link dropped must not open a gate"
    verdict = watch.judge(gates)
    assert not verdict.holds
    assert (verdict.signal, verdict.value) == (SPEED, None)
    unreachable = f"waiting for {SPEED} == 0: the vehicle databroker does not answer, so {SPEED} has no value"
    assert verdict.reason == reasons[-1] == unreachable
    await asyncio.sleep(0.5)
    assert not keep.done()
    await databroker.serve()  # the same port again, the vehicle stopped meanwhile
    await databroker.set(SPEED, 0.0)
    assert (await keep).holds  # reconnected (backoff at most 5 s) and saw the new value
    async with asyncio.timeout(5):  # nobody waits any more: the subscription is closed
        while watch.connected:  # noqa: ASYNC110 — polling the adapter's state
            await asyncio.sleep(0.05)


async def test_a_renewed_subscription_keeps_the_values_it_still_covers(broker: Any, watch: SignalWatch) -> None:
    """A second wait on another signal re-opens the subscription; the first wait's reason does
    not flap to "no value" meanwhile."""
    speed = parse_gates([f"{SPEED} == 0"])
    reasons: list[str] = []
    first = asyncio.create_task(watch.wait_until(speed, None, lambda v: reasons.append(v.reason)))
    async with asyncio.timeout(10):
        while not reasons or "is 50" not in reasons[-1]:  # noqa: ASYNC110 — the adapter's callback
            await asyncio.sleep(0.02)
    second = asyncio.create_task(watch.wait_until(parse_gates([f"{SOC} >= 30"]), 10.0))
    assert (await second).holds
    assert len(broker.subscriptions) == 2
    assert sorted(broker.subscriptions[-1]) == sorted([SPEED, SOC])
    assert reasons == [f"waiting for {SPEED} == 0: {SPEED} has no value yet",
                       f"waiting for {SPEED} == 0: {SPEED} is 50"]
    await broker.set(SPEED, 0.0)
    assert (await first).holds


async def test_stand_in_a_gate_wait_tells_its_app_each_new_reason_then_the_opening(
    broker: Any, watch: SignalWatch
) -> None:
    """The supervisor's side (activation.py): one task, messages into the app's inbox, a reason
    without a value held back for a grace (the moment before the first update is no news)."""
    import structlog

    from sdv_edge_agent.activation import GateWait
    from sdv_edge_agent.app_inbox import GatesClosed, GatesOpen
    from sdv_edge_agent.domain.activation import ActivationKey

    inbox: list[Any] = []
    wait = GateWait(watch, inbox.append, structlog.get_logger())
    key = ActivationKey("d" * 64, (f"{SPEED} == 0",), False)
    wait.ensure(key, tuple(parse_gates(key.gates)), "r1")
    async with asyncio.timeout(10):
        while not inbox:  # noqa: ASYNC110 — the inbox is a plain list here
            await asyncio.sleep(0.02)
    await asyncio.sleep(1.5)  # past the grace: the no-value verdict before the first update stays untold
    assert [(type(m), m.verdict.value) for m in inbox] == [(GatesClosed, 50.0)]
    wait.ensure(key, tuple(parse_gates(key.gates)), "r1")  # the same wait goes on
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("gates:")] == ["gates:dddddddddddd"]

    opened_at = time.monotonic()
    await broker.set(SPEED, 0.0)
    async with asyncio.timeout(5):
        while not isinstance(inbox[-1], GatesOpen):  # noqa: ASYNC110 — the inbox is a plain list here
            await asyncio.sleep(0.005)
    assert inbox[-1] == GatesOpen(key)
    assert time.monotonic() - opened_at < 0.5

    other = ActivationKey("d" * 64, (f"{SPEED} > 100",), False)
    wait.ensure(other, tuple(parse_gates(other.gates)), "r2")
    async with asyncio.timeout(5):
        while not isinstance(inbox[-1], GatesClosed):  # noqa: ASYNC110 — the inbox is a plain list here
            await asyncio.sleep(0.01)
    assert inbox[-1].key == other
    wait.cancel()
    await asyncio.sleep(0.05)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("gates:")]
    async with asyncio.timeout(5):  # nobody waits: the subscription closes
        while watch.connected:  # noqa: ASYNC110 — polling the adapter's state
            await asyncio.sleep(0.05)
