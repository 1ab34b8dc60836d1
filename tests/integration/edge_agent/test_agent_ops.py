"""Interactive ops on sdv.device.<id>.ops.<op>: pause/resume/stop/start/restart, stdin, logs."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import nats.errors
from typer.testing import CliRunner

from sdv_client.cli import app as sdv


async def test_pause_resume_stdin_logs_and_typed_errors(fleet: Any, harness: Any, tmp_path: Path) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    fleet.agent("car-ops")
    await fleet.desire("car-ops", 1, {"ticker": pkg})
    await fleet.until_state("car-ops", "ticker", "RUNNING", healthy=True)
    await fleet.until(lambda: len(fleet.lines("car-ops", "ticker")) > 5, what="output")

    # Pause stops the output; resume starts it again.
    reply = await fleet.op("car-ops", "pause", {"app": "ticker"})
    assert reply["status"] == "ok"
    assert reply["result"]["state"] == "PAUSED"
    await asyncio.sleep(0.2)  # lines already printed may still be on their way
    before = len(fleet.lines("car-ops", "ticker"))
    await asyncio.sleep(0.6)
    assert len(fleet.lines("car-ops", "ticker")) == before
    await fleet.fact("car-ops", "AppPaused", app="ticker")
    await fleet.until_state("car-ops", "ticker", "PAUSED")
    reply = await fleet.op("car-ops", "resume", {"app": "ticker"})
    assert reply["result"]["state"] == "RUNNING"
    await fleet.until(lambda: len(fleet.lines("car-ops", "ticker")) > before + 5, what="output after resume")
    await fleet.fact("car-ops", "AppResumed", app="ticker")

    # stdin reaches the app.
    reply = await fleet.op("car-ops", "stdin", {"app": "ticker", "data": "hello agent\n"})
    assert reply["status"] == "ok"
    await fleet.until(lambda: "echo: hello agent" in fleet.lines("car-ops", "ticker"), what="echo")

    # Local console history: tail and full-text search.
    tail = await fleet.op("car-ops", "logs", {"app": "ticker", "lines": 3})
    assert len(tail["result"]["lines"]) == 3
    found = await fleet.op("car-ops", "logs", {"search": "echo AND agent"})
    assert [e["line"] for e in found["result"]["lines"]] == ["echo: hello agent"]

    # Typed errors: an illegal move, an unknown app, a malformed request, a bad search.
    await fleet.op("car-ops", "stop", {"app": "ticker"})
    await fleet.until_state("car-ops", "ticker", "STOPPED")
    err = await fleet.op("car-ops", "pause", {"app": "ticker"})
    assert err["status"] == "error"
    assert err["code"] == "illegal_transition"
    assert "cannot go from STOPPED to PAUSED" in err["message"]
    err = await fleet.op("car-ops", "pause", {"app": "nope"})
    assert err["code"] == "not_found"
    err = await fleet.op("car-ops", "pause", {"ap": "ticker"})
    assert err["code"] == "invalid_request"
    err = await fleet.op("car-ops", "logs", {"search": "AND AND"})
    assert err["code"] == "invalid_request"
    err = await fleet.op("car-ops", "explode", {"app": "ticker"})
    assert err["code"] == "invalid_request"

    # The operator's stop holds although the desired state says running ...
    await asyncio.sleep(0.5)
    assert await fleet.app_state("car-ops", "ticker") == "STOPPED"
    # ... until the operator starts it again.
    reply = await fleet.op("car-ops", "start", {"app": "ticker"})
    assert reply["result"]["state"] == "RUNNING"
    await fleet.until_state("car-ops", "ticker", "RUNNING", healthy=True)
    first_pid = reply["result"]["pid"]
    reply = await fleet.op("car-ops", "restart", {"app": "ticker"})
    assert reply["result"]["state"] == "RUNNING"
    assert reply["result"]["pid"] != first_pid
    await fleet.until(lambda: len(fleet.find_facts("car-ops", "AppStarted", app="ticker")) == 3,
                      what="three AppStarted facts")
    # Each occurrence is a distinct fact (own msg id), so none was dropped as a duplicate.
    assert len({f.event_id for f in fleet.find_facts("car-ops", "AppStarted")}) == 3


async def cli(fleet: Any, *args: str) -> tuple[int, Any]:
    result = await asyncio.to_thread(CliRunner().invoke, sdv, [*args, "--json"],
                                     env={"SDV_NATS_URL": fleet.nats_url, "SDV_NATS_CREDS": ""})
    return result.exit_code, json.loads(result.stdout)


async def test_sdv_app_cli_pauses_resumes_writes_stdin_and_searches_the_devices_console(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    fleet.agent("car-cli")
    await fleet.desire("car-cli", 1, {"ticker": pkg})
    await fleet.until_state("car-cli", "ticker", "RUNNING", healthy=True)

    code, doc = await cli(fleet, "app", "pause", "car-cli", "ticker")
    assert (code, doc["app"]["state"], doc["app"]["held"]) == (0, "PAUSED", "paused")
    await fleet.until_state("car-cli", "ticker", "PAUSED")
    code, doc = await cli(fleet, "app", "resume", "car-cli", "ticker")
    assert (code, doc["app"]["state"]) == (0, "RUNNING")
    code, _ = await cli(fleet, "app", "stdin", "car-cli", "ticker", "ping from the cli")
    assert code == 0
    await fleet.until(lambda: "echo: ping from the cli" in fleet.lines("car-cli", "ticker"), what="echo")
    code, doc = await cli(fleet, "app", "logs", "car-cli", "--search", '"ping from the cli"')
    assert code == 0
    assert [entry["line"] for entry in doc["lines"]] == ["echo: ping from the cli"]
    code, doc = await cli(fleet, "app", "logs", "car-cli", "ticker", "-n", "4", "--stream", "stdout")
    assert code == 0
    assert len(doc["lines"]) == 4
    assert all(entry["app"] == "ticker" and entry["stream"] == "stdout" for entry in doc["lines"])
    # `sdv app logs DEVICE`, as its help says: the device's last lines, of every app.
    code, doc = await cli(fleet, "app", "logs", "car-cli", "-n", "3")
    assert code == 0, doc
    assert [entry["app"] for entry in doc["lines"]] == ["ticker"] * 3

    # Refusals keep their codes and exit 1; a device nobody answers for exits 3.
    code, doc = await cli(fleet, "app", "pause", "car-cli", "nope")
    assert (code, doc["ok"], doc["code"]) == (1, False, "not_found")
    code, doc = await cli(fleet, "app", "pause", "car-gone", "ticker")
    assert (code, doc["code"]) == (3, "unavailable")
    assert "agent of device car-gone" in doc["error"]


async def test_an_op_is_a_span_of_the_senders_trace_exported_by_the_agent(fleet: Any) -> None:
    """With `OTEL_EXPORTER_OTLP_ENDPOINT` set the agent exports its spans too: an op sent with a
    trace context is handled in a child span of it (`sdv app logs` → this device)."""
    otlp = sys.modules["sdv_otlp_test_support"]  # loaded by tests/conftest.py
    trace_id, sender_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with otlp.running_collector() as collector:
        fleet.agent("car-traced", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="100")
        headers = {"traceparent": f"00-{trace_id}-{sender_span}-01"}

        async def answered() -> bool:
            try:
                await fleet.nc.request("sdv.device.car-traced.ops.logs", b'{"app": "none"}',
                                       timeout=1, headers=headers)
                return True
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                return False

        await fleet.until(answered, timeout=30, what="the agent answers ops")
        await fleet.until(lambda: any(s.trace_id == trace_id for s in collector.of("sdv-edge_agent")),
                          timeout=20, what="the agent's span of the op")
        op = next(s for s in collector.of("sdv-edge_agent") if s.trace_id == trace_id)
        assert op.name == "op logs"
        assert op.parent_id == sender_span
