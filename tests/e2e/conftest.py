"""The suite under the end-to-end tests: packager, registry and one orchestrator (tick 0.2 s) on a
NATS server of each test's own. The orchestrator and agent harnesses are loaded here, by path
and under the names their own conftests use (tests/ is not a package), so one run that collects
them all gets one module each; test modules take them from `sys.modules`."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load(name: str, path: Path) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


TESTS = Path(__file__).parents[1]
fleet_harness = _load("sdv_orchestrator_fleet_harness", TESTS / "integration" / "orchestrator" / "fleet_harness.py")
_load("sdv_agent_test_harness", TESTS / "integration" / "edge_agent" / "agent_harness.py")


@pytest.fixture
async def suite(fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path) -> AsyncIterator[Any]:
    async with fleet_harness.running_suite(fresh_nats_url, database_url, schema, tmp_path) as s:
        yield s
