"""Real servers for the whole suite: one NATS (JetStream) and one PostgreSQL per session.

`SDV_NATS_URL` / `SDV_DATABASE_URL` point at existing servers instead; `SDV_TEST_DOCKER=1`
starts them with testcontainers when a Docker engine answers. Tests isolate themselves by a
fresh PostgreSQL schema each (`schema`, `store`) and, where JetStream delivery is under test,
a fresh NATS server each (`fresh_nats_url`: it starts in milliseconds).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient

from sdv_events.logs import configure_logging
from sdv_events.provisioning import provision
from sdv_events.servers import NatsServer, PostgresServer
from sdv_events.store import EventStore

configure_logging("tests", level=os.environ.get("SDV_LOG_LEVEL", "WARNING"))


def _load_by_path(name: str, path: Path) -> None:
    """tests/ is not a package: shared test modules are loaded here, once, by path; test
    modules take them from `sys.modules`."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])


_load_by_path("sdv_relay_test_support", Path(__file__).parent / "integration" / "relay_support.py")
_load_by_path("sdv_otlp_test_support", Path(__file__).parent / "integration" / "otlp_support.py")
_load_by_path("sdv_vehicle_test_support", Path(__file__).parent / "integration" / "vehicle_support.py")


def pytest_configure(config: pytest.Config) -> None:
    """Each session's temporary directories in a folder of its own under /tmp, searchable by
    other users: sandboxed apps run as users of their own and must reach the agents' data
    directories below it. (Under pytest's shared `/tmp/pytest-of-<user>`, every other pytest
    session that starts resets that folder to 0700 — locking out the apps of a session already
    running; seen as apps that never start while two sessions run at once.)"""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        base = Path(tempfile.mkdtemp(prefix=f"sdv-pytest-{os.getuid()}-", dir="/tmp"))
        base.chmod(0o711)
        config.option.basetemp = str(base)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A passing session leaves nothing behind; a failing one keeps its files to look at."""
    base = session.config.option.basetemp
    if exitstatus == 0 and base and Path(base).name.startswith("sdv-pytest-"):
        shutil.rmtree(base, ignore_errors=True)


def _docker_wanted() -> bool:
    if os.environ.get("SDV_TEST_DOCKER") != "1":
        return False
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    if url := os.environ.get("SDV_NATS_URL"):
        yield url
    elif _docker_wanted():
        from testcontainers.community.nats import NatsContainer

        with NatsContainer().with_command("-js") as container:
            yield container.nats_uri()
    else:
        with NatsServer() as server:
            yield server.url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if url := os.environ.get("SDV_DATABASE_URL"):
        yield url
    elif _docker_wanted():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
    else:
        with PostgresServer() as server:
            yield server.url


@pytest.fixture
def fresh_nats_server() -> Iterator[NatsServer]:
    """A NATS server of this test's own (delivery, dedupe and ordering tests)."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def fresh_nats_url(fresh_nats_server: NatsServer) -> str:
    return fresh_nats_server.url


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(database_url: str, schema: str) -> AsyncIterator[EventStore]:
    event_store = await EventStore.open(database_url, schema)
    yield event_store
    await event_store.close()


@pytest.fixture
async def nc(fresh_nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(fresh_nats_url)
    await provision(client.jetstream())
    yield client
    await client.drain()
