from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sdv_events.servers import BaseImageError, DockerEngine, DockerUnavailable, ensure_python_image


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


@dataclass(frozen=True)
class LocalEngine:
    url: str  # what the agent's --docker-host takes
    client: Any  # docker.DockerClient
    base_image: str


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[LocalEngine]:
    """A private dockerd for the session, with the Python base image (built once per machine,
    ~1 min, then imported from the cached root filesystem). Skips, with the reason, where no
    engine can run (see deploy/docker-engine-setup.sh)."""
    import docker

    try:
        engine = DockerEngine().start()
    except DockerUnavailable as err:
        pytest.skip(f"no docker engine: {err.reason}")
    try:
        client = docker.DockerClient(base_url=engine.url, timeout=120, max_pool_size=64)
        started = time.monotonic()
        try:
            base = ensure_python_image(client)
        except BaseImageError as err:
            pytest.skip(f"no python base image: {err.reason}")
        print(f"\ndocker engine {engine.url}: base image {base.tag} {base.source} in "
              f"{time.monotonic() - started:.1f}s")
        yield LocalEngine(engine.url, client, base.tag)
        client.close()
    finally:
        engine.stop()


@pytest.fixture
def docker_host(docker_engine: LocalEngine) -> Iterator[LocalEngine]:
    """The session's engine, emptied after the test of every container and app image."""
    yield docker_engine
    client = docker_engine.client
    for container in client.containers.list(all=True):
        with contextlib.suppress(Exception):
            container.remove(force=True)
    for image in client.images.list():
        if docker_engine.base_image not in image.tags:
            with contextlib.suppress(Exception):
                client.images.remove(image.id, force=True)
