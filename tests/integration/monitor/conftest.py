"""The monitor on real servers beside the packager, registry and orchestrator (the fleet
harness of tests/integration/orchestrator, simulated agents) and its HTTP API on a free port."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from sdv_events.servers.ports import free_port
from sdv_monitor.app import serve as serve_monitor
from sdv_monitor.settings import MonitorSettings


def load_harness() -> ModuleType:
    name = "sdv_orchestrator_fleet_harness"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "orchestrator" / "fleet_harness.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass
class Monitor:
    running: Any
    settings: MonitorSettings
    http: httpx.AsyncClient

    async def until(self, check: Any, timeout: float, what: str) -> Any:
        return await load_harness().until(check, timeout, what)

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()


async def start_monitor(suite: Any, schema: str, **overrides: Any) -> Monitor:
    harness = load_harness()
    settings = MonitorSettings(service="monitor", nats_url=suite.url, database_url=suite.database_url,
                               schema_name=schema, log_level="WARNING", http_port=free_port(),
                               **overrides)
    running = await harness.start_service("monitor", serve_monitor, settings, suite.nc)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10.0)
    await harness.until(lambda: _answers(http), 15.0, "the monitor's HTTP API answers")
    return Monitor(running, settings, http)


async def _answers(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
async def suite(fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path) -> AsyncIterator[Any]:
    # No simulated heartbeats: these tests send their own, or count what no heartbeat means.
    async with load_harness().running_suite(fresh_nats_url, database_url, schema, tmp_path,
                                            heartbeats=False) as s:
        yield s


@pytest.fixture
async def monitor(suite: Any, schema: str) -> AsyncIterator[Monitor]:
    started = await start_monitor(suite, f"{schema}_m")
    yield started
    await started.http.aclose()
    await started.running.stop()


@pytest.fixture
def load_harness_module() -> ModuleType:
    return load_harness()


@pytest.fixture
def start_monitor_fn() -> Any:
    return start_monitor
