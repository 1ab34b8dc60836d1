"""The agent's view of live vehicle signals for activation gates (adapters/vehicle_signals.py),
against a *stand-in* KUKSA databroker: the real one is a Rust binary that cannot run here
(FACTS.md), so a gRPC server built from kuksa-client's own `kuksa.val.v1` protos plays it,
pushing each change of the values it holds to its subscribers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from kuksa.val.v1 import types_pb2, val_pb2, val_pb2_grpc

from sdv_edge_agent.adapters.vehicle_signals import SignalWatch
from sdv_events.gates import parse_gates

SPEED = "Vehicle.Speed"
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"


class PushingDatabroker(val_pb2_grpc.VALServicer):  # type: ignore[misc]
    """Holds signal values; each `set` is pushed to every subscriber of that signal."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values = dict(values)
        self.changed = asyncio.Condition()
        self.subscriptions: list[list[str]] = []

    async def set(self, path: str, value: float) -> None:
        async with self.changed:
            self.values[path] = value
            self.changed.notify_all()

    async def GetServerInfo(self, request: Any, context: Any) -> Any:
        return val_pb2.GetServerInfoResponse(name="stand-in databroker", version="test")

    async def Subscribe(self, request: Any, context: Any) -> Any:
        paths = [e.path for e in request.entries]
        self.subscriptions.append(paths)
        sent: dict[str, float] = {}
        while True:
            async with self.changed:
                fresh = {p: v for p, v in self.values.items() if p in paths and sent.get(p) != v}
                if not fresh:
                    await self.changed.wait()
                    continue
            sent.update(fresh)
            yield val_pb2.SubscribeResponse(
                updates=[
                    val_pb2.EntryUpdate(
                        entry=types_pb2.DataEntry(path=p, value=types_pb2.Datapoint(float=v)),
                        fields=[types_pb2.FIELD_VALUE],
                    )
                    for p, v in fresh.items()
                ]
            )


async def serve(servicer: PushingDatabroker, port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    val_pb2_grpc.add_VALServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


@pytest.fixture
async def broker() -> AsyncIterator[tuple[PushingDatabroker, int, list[grpc.aio.Server]]]:
    servicer = PushingDatabroker({SPEED: 50.0, SOC: 80.0})
    server, port = await serve(servicer)
    servers = [server]
    try:
        yield servicer, port, servers
    finally:
        for s in servers:
            await s.stop(0)


@pytest.fixture
async def watch(broker: tuple[PushingDatabroker, int, Any]) -> AsyncIterator[SignalWatch]:
    _, port, _ = broker
    watch = SignalWatch(lambda: ("127.0.0.1", port))
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_gate_opens_within_moments_of_the_vehicle_stopping(broker: Any, watch: SignalWatch) -> None:
    databroker, _, _ = broker
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
    databroker, port, servers = broker
    await databroker.set(SPEED, 0.0)
    gates = parse_gates([f"{SPEED} == 0"])
    assert (await watch.wait_until(gates, 10.0)).holds
    await servers.pop().stop(0)
    async with asyncio.timeout(10):  # the subscription notices the loss
        while watch.values or watch.last_error is None:  # noqa: ASYNC110 — polling the adapter's state
            await asyncio.sleep(0.05)
    assert not watch.values, "values seen before the link dropped must not open a gate"
    assert not watch.judge(gates).holds
    assert watch.last_error is not None
    keep = asyncio.create_task(watch.wait_until(gates, 30.0))
    await asyncio.sleep(0.5)
    assert not keep.done()
    servers.append((await serve(databroker, port))[0])
    assert (await keep).holds  # reconnected (backoff at most 5 s) and saw the value again
    assert watch.connected
