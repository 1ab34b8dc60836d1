from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def load_harness() -> ModuleType:
    name = "sdv_orchestrator_fleet_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fleet_harness.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
async def suite(fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path) -> AsyncIterator[Any]:
    """Packager, registry and one orchestrator (tick 0.2 s) on a NATS server of this test's own."""
    async with load_harness().running_suite(fresh_nats_url, database_url, schema, tmp_path) as s:
        yield s


@pytest.fixture
def make_suite(fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path) -> Any:
    """`async with make_suite(heartbeat_silence_s=1.5) as suite:` — the suite with options."""

    def make(**options: Any) -> Any:
        return load_harness().running_suite(fresh_nats_url, database_url, schema, tmp_path, **options)

    return make
