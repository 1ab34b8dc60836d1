"""One rollout is one trace (issue #12, point 5): from the operator's span through the
orchestrator (created, planned, waves, each device's outcome, completed — whether a request,
the ticker or a device's report caused it), the desired-state document, to the devices' facts,
which the agents export as spans of that trace over OTLP.

The cloud side runs in this process (tests/integration/orchestrator/fleet_harness.py); the
devices are real agent code in one `sdv-agent --simulate` process, exporting to a real OTLP/HTTP
collector (tests/integration/otlp_support.py)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from sdv_events.bus.tracing import span, trace_id
from sdv_events.codec import decode_envelope
from sdv_events.envelope import Envelope
from sdv_events.schemas.deployment import GetPublicKey
from sdv_events.schemas.devices import DeviceList, DeviceView, ListDevices, PreauthorizeDevice
from sdv_events.schemas.packages import SigningKey
from sdv_events.schemas.rollouts import DeviceSucceeded, RolloutCompleted, WaveStarted

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

fleet_harness = sys.modules["sdv_orchestrator_fleet_harness"]  # loaded by conftest.py
agent_harness = sys.modules["sdv_agent_test_harness"]
otlp = sys.modules["sdv_otlp_test_support"]
until = fleet_harness.until
AGENTS = 3


async def test_one_rollout_is_one_trace_from_the_operator_to_the_devices_facts(
    suite: Any, tmp_path: Path,
) -> None:
    key = await suite.packages.signing_key()
    orchestrator = await suite.commands.call("orchestrator", "public_key", GetPublicKey(), SigningKey)
    package = await suite.publish("traced", "1.0.0")
    token, labels = f"tok-{uuid.uuid4().hex}", {"fleet": "traced"}
    facts: list[Envelope] = []

    async def on_fact(msg: Msg) -> None:
        facts.append(decode_envelope(msg.data))

    await suite.nc.subscribe("sdv.evt.agent.>", cb=on_fact)
    with otlp.running_collector() as collector:
        simulator = agent_harness.SimulatorProc(
            AGENTS, tmp_path / "simulator", suite.url, key.public_key_b64, orchestrator.public_key_b64,
            ["--enrol", "--fleet-token", token],
            {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"})
        devices = simulator.device_ids
        for device in devices:
            await suite.commands.call("registry", "preauthorize", PreauthorizeDevice(device, token, labels),
                                      DeviceView)
        simulator.start()
        try:
            async def listed() -> bool:
                page = await suite.commands.call("registry", "list", ListDevices(
                    selector="fleet=traced", status="accepted", limit=100), DeviceList)
                return set(devices) <= {d.device_id for d in page.devices}

            await until(listed, 30, "the simulated devices are accepted")

            # What `sdv rollout create` does: the command runs in the CLI's span.
            with span("sdv rollout create") as operator:
                view = await suite.create(package, selector="fleet=traced", kind="all-at-once", device_s=30.0)
            trace = format(operator.get_span_context().trace_id, "032x")
            done = await suite.wait_status(view.rollout_id, "completed", "aborted", "rolled_back", timeout=40)
            assert done.status == "completed", done.reason

            # Every event of the rollout is in the operator's trace: those the request caused,
            # those the ticker decided, and the devices' outcomes their facts caused.
            events = await suite.events(view.rollout_id)
            kinds = {type(e.data) for e in events}
            assert {WaveStarted, DeviceSucceeded, RolloutCompleted} <= kinds
            assert {(e.type, trace_id(e.trace)) for e in events} == {(e.type, trace) for e in events}

            # The desired document hands the trace to the devices; their facts carry it …
            doc = await suite.desired(devices[0])
            assert doc is not None
            assert trace_id(doc.apps["traced"].trace) == trace
            ours = [f for f in facts if f.data.rollout_id == view.rollout_id]
            assert {f.data.device_id for f in ours} == set(devices)
            assert {trace_id(f.trace) for f in ours} == {trace}

            # … and the agents export their spans of it.
            def agent_spans() -> list[Any]:
                return [s for s in collector.of("sdv-edge_agent") if s.trace_id == trace]

            async def exported() -> bool:
                return len(agent_spans()) >= len(ours)

            await until(exported, 20, "the agents' spans of their facts")
            assert {s.name for s in agent_spans()} >= {"fact AppInstalled", "fact AppHealthy"}
        finally:
            code = simulator.stop()
        assert code == 0, simulator.log()[-3000:]
