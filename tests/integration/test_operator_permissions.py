"""Operator roles as nats-server enforces them (operator mode, TLS, the suite's own chain of
trust and account JWTs): every command and op subject, for every role, is either answered or
refused by the server — exactly as the table in `sdv_events.auth.roles` says — and a request's
actor is the name in the credentials the server checked, whatever the client's headers say.

A responder in the app account (full rights: a stand-in for every service at once) answers every
command with the actor `serve_one` derives; one in the devices account answers every op. No
service runs here: this is about the bus."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from sdv_events.auth import (
    Role,
    Trust,
    decode_jwt,
    device_permissions,
    new_keypair,
    public_key,
    push_account_jwt,
    raw_creds,
    render_server_config,
    seed_of,
)
from sdv_events.auth.certificates import ServerTls, ensure_server_tls
from sdv_events.auth.claims import Permissions
from sdv_events.auth.client_tls import tls_options
from sdv_events.auth.creds import format_creds, jwt_of_creds
from sdv_events.auth.roles import COMMAND_ROLES, OP_ROLES, ROLES, OperatorRole, may
from sdv_events.bus import CommandClient, Forbidden
from sdv_events.bus.actor import REQUEST_INFO_HEADER
from sdv_events.bus.denials import PermissionDenials, PublishDenied
from sdv_events.bus.rpc import serve_one
from sdv_events.servers import NatsServer
from sdv_events.subjects import command_subject, ops_subject

pytestmark = pytest.mark.timeout(120)


class Who(msgspec.Struct):
    actor: str
    subject: str


class Anything(msgspec.Struct):
    pass


@dataclass
class Bus:
    url: str
    trust: Trust
    tls: ServerTls

    def options(self) -> dict[str, Any]:
        return tls_options(self.url, str(self.tls.ca_file))

    async def connect(self, creds: str, **extra: Any) -> NatsClient:
        return await nats.connect(self.url, user_credentials=raw_creds(creds), allow_reconnect=False,
                                  connect_timeout=3, **self.options(), **extra)

    async def operator(self, name: str, role: OperatorRole) -> tuple[NatsClient, PermissionDenials]:
        denials = PermissionDenials()
        nc = await self.connect(self.trust.operator_creds(name, role), error_cb=denials.error_cb)
        denials.attach(nc)
        return nc, denials


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    trust = Trust.generate()
    tls = ensure_server_tls(tmp_path_factory.mktemp("tls"))
    with NatsServer(config_text=render_server_config(trust), tls=tls) as server:
        yield Bus(server.url, trust, tls)


async def _who(msg: Msg) -> None:
    async def handler(_: Anything, info: Any) -> Who:
        return Who(info.actor, info.subject)

    await msg.respond(await serve_one(msg.data, msg.subject, msg.headers or {}, Anything, handler))


def _device_user(trust: Trust) -> str:
    """A full-rights user of the devices account: the agents' side of every op, at once."""
    key = new_keypair(Role.USER)
    jwt = trust.device_jwt(public_key(key), "ops-responder", Permissions(restricted=False))
    return format_creds(jwt, seed_of(key))


@pytest.fixture(scope="module")
async def responders(bus: Bus) -> AsyncIterator[None]:
    services = await bus.connect(bus.trust.service_creds("stand-in"))
    devices = await bus.connect(_device_user(bus.trust))
    await services.subscribe("sdv.cmd.>", cb=_who)
    await devices.subscribe("sdv.device.*.ops.>", cb=_who)
    await services.flush()
    await devices.flush()
    yield
    await services.close()
    await devices.close()


async def _outcome(client: CommandClient, subject: str) -> str:
    """The actor the responder saw, or `refused` (by the server: a permissions violation)."""
    try:
        who = await client.request(subject, Anything(), Who, timeout=5)
    except Forbidden as refused:
        return "refused" if refused.details["reason"] == "permissions_violation" else repr(refused)
    assert who.subject == subject
    return who.actor


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_may_send_exactly_the_commands_and_ops_of_its_row(
        bus: Bus, responders: None, role: OperatorRole) -> None:
    nc, _ = await bus.operator(f"{role}-1", role)
    client = CommandClient(nc, actor="operator:someone-else", timeout=5)
    try:
        subjects = {command_subject(*name.split(".", 1)): least for name, least in COMMAND_ROLES.items()}
        subjects |= {ops_subject("car-1", op): least for op, least in OP_ROLES.items()}
        started = time.monotonic()
        outcomes = dict(zip(subjects, await asyncio.gather(
            *(_outcome(client, s) for s in subjects)), strict=True))
        expected = {s: f"operator:{role}-1" if may(role, least) else "refused"
                    for s, least in subjects.items()}
        assert outcomes == expected
        # Refusals come from the server within a round trip, not after a timeout.
        assert time.monotonic() - started < 4.0
        if role == "admin":  # a command not in the table yet is an admin's only
            assert await _outcome(client, "sdv.cmd.registry.not_in_the_table_yet") == "operator:admin-1"
        else:
            assert await _outcome(client, "sdv.cmd.registry.not_in_the_table_yet") == "refused"
    finally:
        await nc.close()


async def test_a_forged_request_info_header_is_replaced_by_the_servers(bus: Bus, responders: None) -> None:
    """The operator sends, besides its command, a `Nats-Request-Info` naming the admin — with the
    admin's real JWT — and an `Sdv-Actor` claiming the admin: the service sees the server's
    header (this operator's key and JWT) and records this operator."""
    admin_jwt = jwt_of_creds(bus.trust.operator_creds("admin", "admin"))
    forged = json.dumps({"acc": bus.trust.operators_account_key, "user": "U" + "A" * 55,
                         "name": "admin", "jwt": admin_jwt})
    nc, _ = await bus.operator("mallory", "operator")
    try:
        for headers in ({REQUEST_INFO_HEADER: forged, "Sdv-Actor": "operator:admin"},
                        {REQUEST_INFO_HEADER: "not json", "Sdv-Actor": "system"},
                        {"Sdv-Actor": "service:orchestrator"}):
            reply = await nc.request("sdv.cmd.orchestrator.pause", b"{}", headers=headers, timeout=5)
            assert json.loads(reply.data)["result"]["actor"] == "operator:mallory", headers
        # The header cannot widen the role either: the server checks the subject, not headers.
        client = CommandClient(nc, timeout=5)
        assert await _outcome(client, "sdv.cmd.registry.accept") == "refused"
    finally:
        await nc.close()


async def test_inside_the_app_account_a_claim_to_be_an_operator_is_recorded_as_unverified(
        bus: Bus, responders: None) -> None:
    """Services name themselves (`service:<name>`); none can pass for an operator."""
    nc = await bus.connect(bus.trust.service_creds("svc"))
    try:
        for claimed, recorded in (("service:orchestrator", "service:orchestrator"),
                                  ("operator:admin", "unverified:operator:admin")):
            who = await CommandClient(nc, actor=claimed).call("orchestrator", "get", Anything(), Who)
            assert who.actor == recorded
    finally:
        await nc.close()


async def test_operators_reach_nothing_of_the_suite_but_commands_ops_and_their_reads(bus: Bus) -> None:
    """Even an admin's credentials publish no event, write no desired state, manage no stream
    and read no event: none of that is imported into the operators account."""
    errors: list[str] = []

    async def record(exc: Exception) -> None:
        errors.append(str(exc).lower())

    watcher = await bus.connect(bus.trust.service_creds("watcher"))
    seen: list[str] = []

    async def spy(msg: Msg) -> None:
        seen.append(msg.subject)

    for subject in ("sdv.evt.>", "$KV.>", "$JS.API.>"):
        await watcher.subscribe(subject, cb=spy)
    await watcher.flush()
    nc = await bus.connect(bus.trust.operator_creds("root-ish", "admin"), error_cb=record)
    try:
        for subject in ("sdv.evt.rollout.r-1.RolloutCreated", "sdv.evt.agent.car-1.AppHealthy",
                        "$KV.sdv_desired.car-1", "$JS.API.STREAM.DELETE.SDV_EVENTS",
                        "$JS.SDV.API.STREAM.DELETE.SDV_EVENTS", "$JS.SDV.API.STREAM.PURGE.SDV_EVENTS"):
            await nc.publish(subject, b"{}")
        await nc.subscribe("sdv.evt.>")
        await nc.flush()
        await asyncio.sleep(0.3)
        assert seen == [], seen
        assert any("permissions violation for subscription to \"sdv.evt.>\"" in e for e in errors), errors
        for subject in ("sdv.evt.rollout.r-1.rolloutcreated", "$kv.sdv_desired.car-1",
                        "$js.sdv.api.stream.delete.sdv_events"):
            assert any(subject in e for e in errors), (subject, errors)
    finally:
        await nc.close()
        await watcher.close()


async def test_a_revoked_operator_is_disconnected_and_refused(bus: Bus, tmp_path: Path) -> None:
    """Revocation as the registry does it: the operators account JWT re-issued with the key and
    pushed as the system user; the server closes the live connection and refuses the creds."""
    creds = bus.trust.operator_creds("leaver", "operator")
    key = decode_jwt(jwt_of_creds(creds), verify=False)["sub"]
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await bus.connect(creds, closed_cb=on_closed)
    system = await bus.connect(bus.trust.system_creds())
    try:
        await push_account_jwt(system, bus.trust.operators_account_key,
                               bus.trust.operators_account_jwt({key: int(time.time())}))
        await asyncio.wait_for(closed.wait(), 5)
        with pytest.raises(Exception, match=r"(?i)authorization violation"):
            await bus.connect(creds, max_reconnect_attempts=1)
        # Others of the account are untouched.
        other = await bus.connect(bus.trust.operator_creds("stayer", "operator"))
        await other.close()
    finally:
        await push_account_jwt(system, bus.trust.operators_account_key, bus.trust.operators_account_jwt())
        await system.close()
        if not nc.is_closed:
            await nc.close()


async def test_every_role_hears_devices_console_lines_live_and_writes_none(bus: Bus) -> None:
    """`sdv logs -f` and the demo follow `sdv.logs.>`: lines a device publishes reach an
    operator (imported from the devices account); an operator cannot write one."""
    key = new_keypair(Role.USER)
    device_creds = format_creds(bus.trust.device_jwt(public_key(key), "car-1", device_permissions("car-1")),
                                seed_of(key))
    device = await bus.connect(device_creds, inbox_prefix="_INBOX.car-1")
    nc, denials = await bus.operator("watcher", "viewer")
    lines: asyncio.Queue[str] = asyncio.Queue()

    async def on_line(msg: Msg) -> None:
        await lines.put(f"{msg.subject} {msg.data.decode()}")

    try:
        await nc.subscribe("sdv.logs.>", cb=on_line)
        await nc.flush()
        await device.publish("sdv.logs.car-1.nav.stdout", b"route ready")
        await device.flush()
        assert await asyncio.wait_for(lines.get(), 5) == "sdv.logs.car-1.nav.stdout route ready"

        async def forge() -> None:
            await nc.publish("sdv.logs.car-1.nav.stderr", b"forged")
            await nc.flush()
            await asyncio.sleep(5)  # the refusal ends this first

        with pytest.raises(PublishDenied):
            await denials.guard(forge())
    finally:
        await nc.close()
        await device.close()
