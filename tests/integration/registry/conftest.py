"""The registry on real servers: NATS in operator mode (the suite's chain of trust, memory
resolver, preloaded accounts), PostgreSQL, and agents that are plain nats-py clients holding
their own nkey and the shared enrolment credential."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient

from sdv_events import enrolment
from sdv_events.auth import (
    ENROL_INBOX_PREFIX,
    Role,
    Trust,
    announce_subject,
    new_keypair,
    public_key,
    raw_creds,
    render_server_config,
    seed_of,
)
from sdv_events.auth.creds import format_creds
from sdv_events.bus import CommandClient
from sdv_events.bus.rpc import Reply, ReplyError, error_from_reply
from sdv_events.codec import decode_as
from sdv_events.enrolment import SEALED_HEADER, SEALED_SCHEME, open_sealed
from sdv_events.schemas.devices import AnnounceReply, Capabilities, Kuksa
from sdv_events.servers import NatsServer
from sdv_events.service import wait_until_ready
from sdv_events.store import EventStore
from sdv_registry.app import serve
from sdv_registry.settings import RegistrySettings

FLEET_TOKEN = "fleet-token-for-tests-0123456789"


def capabilities(**overrides: Any) -> Capabilities:
    base = dict(hardware_type="jetson-orin", arch="aarch64", runtimes=["docker", "native"],
                python_version="3.11.7", agent_version="0.1.0", memory_mb=8192, storage_mb=65536,
                gpu="orin-ampere", kuksa=Kuksa(present=True, vss_version="4.0"))
    return Capabilities(**(base | overrides))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


@dataclass
class Agent:
    """An edge agent as the registry sees it: its own key pair, the enrolment credential."""

    device_id: str
    url: str
    enrol_creds: str
    key: Any = field(default_factory=lambda: new_keypair(Role.USER))
    errors: list[str] = field(default_factory=list)

    @property
    def public_key(self) -> str:
        return public_key(self.key)

    async def _error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())

    async def enrol_connection(self) -> NatsClient:
        return await nats.connect(self.url, user_credentials=raw_creds(self.enrol_creds),
                                  inbox_prefix=ENROL_INBOX_PREFIX, error_cb=self._error,
                                  allow_reconnect=False)

    async def announce_raw(self, payload: bytes, subject: str | None = None, reader: Any = None
                           ) -> AnnounceReply:
        """One announce request as given (no challenge round); the reply unsealed with this
        agent's key (or `reader`'s: the key the payload names) when the registry sealed it."""
        nc = await self.enrol_connection()
        try:
            msg = await nc.request(subject or announce_subject(self.device_id), payload, timeout=5)
        finally:
            await nc.close()
        data = msg.data
        if (msg.headers or {}).get(SEALED_HEADER) == SEALED_SCHEME:
            data = open_sealed(reader or self.key, data)
        reply: Reply = decode_as(data, Reply)  # type: ignore[arg-type]
        if isinstance(reply, ReplyError):
            raise error_from_reply(reply)
        return decode_as(bytes(reply.result), AnnounceReply)

    async def announce(self, token: str | None = None, **caps: Any) -> AnnounceReply:
        """The agent's exchange: ask for a nonce, announce signed with its own key."""
        nc = await self.enrol_connection()
        try:
            return await enrolment.announce(nc, self.key, self.device_id, capabilities(**caps),
                                            token=token)
        finally:
            await nc.close()

    async def connect(self, reply: AnnounceReply, **options: Any) -> NatsClient:
        assert reply.credentials is not None, reply
        creds = format_creds(reply.credentials.jwt, seed_of(self.key))
        return await nats.connect(self.url, user_credentials=raw_creds(creds),
                                  inbox_prefix=reply.credentials.inbox_prefix,
                                  error_cb=self._error, **options)


@dataclass
class Harness:
    url: str
    trust: Trust
    ops: CommandClient  # a user of the app account with every right (heartbeats, history …)
    store: EventStore
    settings: RegistrySettings
    server: NatsServer
    # An admin of the operators account, as people reach the registry (`call` uses it if set).
    admin: CommandClient | None = None

    def agent(self, device_id: str) -> Agent:
        return Agent(device_id, self.url, self.trust.enrol_creds())

    async def call(self, name: str, request: msgspec.Struct, result_type: type[Any]) -> Any:
        return await (self.admin or self.ops).call("registry", name, request, result_type)


@pytest.fixture
def trust() -> Trust:
    return Trust.generate()


@pytest.fixture
def auth_nats(trust: Trust) -> Iterator[NatsServer]:
    """A NATS server of this test's own, in operator mode."""
    with NatsServer(config_text=render_server_config(trust)) as server:
        yield server


@contextlib.asynccontextmanager
async def running_registry(settings: RegistrySettings) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    creds = Path(settings.nats_credentials or "")
    nc = await nats.connect(settings.nats_url, user_credentials=str(creds))
    try:
        await wait_until_ready(nc, "registry", task=task)
        yield task
    finally:
        await nc.close()
        stop.set()
        await asyncio.wait_for(task, 20)


def registry_settings(url: str, database_url: str, schema: str, trust: Trust, tmp_path: Path,
                      **overrides: Any) -> RegistrySettings:
    creds = tmp_path / "registry.creds"
    creds.write_text(trust.service_creds("registry"))
    return RegistrySettings(
        service="registry", nats_url=url, database_url=database_url, schema_name=schema,
        nats_credentials=str(creds), trust_file=trust.authority().save(tmp_path / "registry-trust.json"),
        log_level="WARNING", heartbeat_silence_s=1.0, fleet_token=FLEET_TOKEN,
        **overrides,
    )


@pytest.fixture
async def registry(auth_nats: NatsServer, database_url: str, schema: str, trust: Trust, tmp_path: Path,
                   store: EventStore) -> AsyncIterator[Harness]:
    settings = registry_settings(auth_nats.url, database_url, schema, trust, tmp_path)
    async with running_registry(settings):
        nc = await nats.connect(auth_nats.url, user_credentials=raw_creds(trust.service_creds("operator")))
        admin = await nats.connect(auth_nats.url, user_credentials=raw_creds(trust.operator_creds("test", "admin")))
        yield Harness(auth_nats.url, trust, CommandClient(nc, actor="service:test"), store, settings,
                      auth_nats, CommandClient(admin, actor="someone-else"))
        await admin.close()
        await nc.close()
