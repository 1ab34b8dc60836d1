from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest


def load_harness() -> ModuleType:
    name = "sdv_agent_test_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("agent_harness.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def harness() -> ModuleType:
    return load_harness()


@pytest.fixture
async def fleet(fresh_nats_url: str, tmp_path: Path, harness: ModuleType) -> AsyncIterator[object]:
    fleet = await harness.Fleet(fresh_nats_url, tmp_path).open()
    try:
        yield fleet
    finally:
        await fleet.close()
