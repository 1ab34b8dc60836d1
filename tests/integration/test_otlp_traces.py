"""Traces leave every process over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (issue #12,
point 5), and one operator command is one trace across processes: the `sdv` CLI's span is the
root, the service handling the request is its child, and a service consuming the event that
request caused continues the same trace.

The suite runs as `sdv up` runs it (one process per service, tests' own NATS, real PostgreSQL);
the collector is a real OTLP/HTTP endpoint in this test (`POST /v1/traces`, protobuf), decoded
with opentelemetry-proto (integration/otlp_support.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdv_client.health import SERVICES
from sdv_client.suite import Suite

pytestmark = pytest.mark.timeout(90)
SDV = Path(sys.executable).parent / "sdv"
otlp = sys.modules["sdv_otlp_test_support"]  # loaded by tests/conftest.py


@pytest.fixture
def collector() -> Iterator[Any]:
    with otlp.running_collector() as c:
        yield c


async def until(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_a_cli_command_is_one_trace_through_the_service_and_the_consumer_of_its_event(
    collector: Any, fresh_nats_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # milliseconds between exports
    prefix = f"t_{uuid.uuid4().hex[:8]}"
    for service in SERVICES:
        monkeypatch.setenv(f"SDV_{service.upper()}_SCHEMA", f"{prefix}_{service[:4]}")
    policy = f"otlp-{uuid.uuid4().hex[:6]}"
    async with Suite(nats_url=fresh_nats_url, database_url=database_url) as suite:
        await suite.wait_ready(timeout=60)
        # Every service exports: its pings (sent by the suite) are spans of its own.
        await until(lambda: all(collector.of(f"sdv-{s}") for s in SERVICES), "spans from every service")

        cli = await asyncio.to_thread(
            subprocess.run,
            [str(SDV), "policy", "set", policy, "--app", "otlp-demo", "--selector", "fleet=otlp", "--json"],
            env=dict(os.environ, SDV_NATS_URL=fresh_nats_url), capture_output=True, text=True, timeout=60,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert json.loads(cli.stdout)["ok"] is True  # exporting prints nothing on stdout

        await until(lambda: any(s.name == "sdv policy set" for s in collector.of("sdv-cli")), "the CLI's span")
        root = next(s for s in collector.of("sdv-cli") if s.name == "sdv policy set")
        assert root.parent_id == ""  # the CLI starts the trace

        def in_trace(service: str) -> list[Any]:
            return [s for s in collector.of(service) if s.trace_id == root.trace_id]

        # The orchestrator handled the request as a child of the CLI's span …
        await until(lambda: any("set_policy" in s.name for s in in_trace("sdv-orchestrator")),
                    "the orchestrator's span of set_policy in the CLI's trace")
        handled = [s for s in in_trace("sdv-orchestrator") if "set_policy" in s.name]
        assert {s.parent_id for s in handled} & {root.span_id}, handled
        # … and the monitor, applying the PolicySet event that request caused, continues it.
        await until(lambda: any("orchestrator.PolicySet" in s.name for s in in_trace("sdv-monitor")),
                    "the monitor's span applying PolicySet in the CLI's trace")
        applied = next(s for s in in_trace("sdv-monitor") if "orchestrator.PolicySet" in s.name)
        orchestrator_spans = {s.span_id for s in in_trace("sdv-orchestrator")}
        assert applied.parent_id in orchestrator_spans

