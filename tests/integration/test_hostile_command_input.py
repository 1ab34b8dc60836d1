"""Every command of every service, sent what an attacker sends (issue #11, "Low" input findings):
deep nesting, a 5000-digit integer, an oversized body, and bad names and ids. Each is answered —
never silence, never `internal` — with `invalid_request` and a reason.

The services run in-process on a NATS server of this module's own and real PostgreSQL. The
commands are not listed here: they are what `register_command` registered in this process, so a
new command is covered the day it is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from msgspec import inspect as mi
from nats.aio.client import Client as NatsClient

from sdv_events.auth import announce_subject
from sdv_events.bus.request_limits import MAX_REQUEST_DEPTH
from sdv_events.bus.routes import CommandSpec, registered_commands
from sdv_events.bus.rpc import Reply, ReplyError, ReplyOk
from sdv_events.codec import decode_as, encode
from sdv_events.servers import NatsServer, free_port
from sdv_events.service import wait_until_ready
from sdv_monitor.app import serve as serve_monitor
from sdv_monitor.settings import MonitorSettings
from sdv_orchestrator.app import serve as serve_orchestrator
from sdv_orchestrator.settings import OrchestratorSettings
from sdv_packager.app import serve as serve_packager
from sdv_packager.settings import PackagerSettings
from sdv_registry.app import serve as serve_registry
from sdv_registry.settings import RegistrySettings

pytestmark = pytest.mark.timeout(120)

SERVICES = ("packager", "registry", "orchestrator", "monitor")
HUGE_INTEGER = b"9" * 5000
BAD_NAMES = ["../x", "", "A" * 1000, "name with spaces", "a.b", "*", ">", "x\x00y", "Ünïcode"]
# The commands that answered `internal` to a bad name or id (issue #11): the field, and the bad
# values that must now be `invalid_request` naming that field.
NOT_A_STREAM_ID = BAD_NAMES
NUL = ["x\x00y"]
FOUND_INTERNAL = {
    ("sdv.cmd.orchestrator.start", "rollout_id"): NOT_A_STREAM_ID,
    ("sdv.cmd.orchestrator.pause", "rollout_id"): NOT_A_STREAM_ID,
    ("sdv.cmd.orchestrator.resume", "rollout_id"): NOT_A_STREAM_ID,
    ("sdv.cmd.orchestrator.cancel", "rollout_id"): NOT_A_STREAM_ID,
    ("sdv.cmd.orchestrator.rollback", "rollout_id"): NOT_A_STREAM_ID,
    ("sdv.cmd.orchestrator.get", "rollout_id"): NOT_A_STREAM_ID,
    ("sdv.cmd.orchestrator.delete_policy", "name"): NOT_A_STREAM_ID,
    ("sdv.cmd.orchestrator.list", "app"): NUL,
    ("sdv.cmd.orchestrator.list", "status"): NUL,
    ("sdv.cmd.packager.list", "name"): NUL,
}


# What a bad name may fairly get: refused, or looked up and not there (or already taken).
ANSWERS_TO_BAD_INPUT = {"invalid_request", "not_found", "conflict", "rejected"}


@dataclass
class Fleet:
    nc: NatsClient
    commands: dict[str, CommandSpec]

    async def send(self, subject: str, body: bytes) -> Reply:
        """The raw body on `subject`; a missing reply fails the test with the subject named."""
        try:
            msg = await self.nc.request(subject, body, timeout=10)
        except nats.errors.TimeoutError:
            raise AssertionError(f"{subject}: no reply to a {len(body)}-byte request") from None
        return decode_as(msg.data, Reply)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def own_nats() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="module")
async def fleet(own_nats: NatsServer, database_url: str,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    url, schema = own_nats.url, f"t_{uuid.uuid4().hex[:10]}"
    keys = tmp_path_factory.mktemp("keys")
    common: dict[str, Any] = {"nats_url": url, "database_url": database_url, "log_level": "ERROR"}
    starts = {
        "packager": lambda stop: serve_packager(PackagerSettings(
            service="packager", schema_name=f"{schema}_p", signing_key_path=Path(keys) / "p.pem",
            wheels_offline=True, **common), stop),
        "registry": lambda stop: serve_registry(RegistrySettings(
            service="registry", schema_name=f"{schema}_r", **common), stop),
        "orchestrator": lambda stop: serve_orchestrator(OrchestratorSettings(
            service="orchestrator", schema_name=f"{schema}_o", signing_key_path=Path(keys) / "o.pem",
            **common), stop),
        "monitor": lambda stop: serve_monitor(MonitorSettings(
            service="monitor", schema_name=f"{schema}_m", http_port=free_port(), **common), stop),
    }
    nc = await nats.connect(url)
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    try:
        for name, start in starts.items():
            stop = asyncio.Event()
            task = asyncio.create_task(start(stop), name=f"service:{name}")
            running.append((stop, task))
            await wait_until_ready(nc, name, task=task, timeout=30)
        commands = {subject: spec for subject, spec in registered_commands().items()
                    if subject.split(".")[2] in SERVICES}
        yield Fleet(nc, commands)
    finally:
        for stop, _ in running:
            stop.set()
        for _, task in running:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 20)
        await nc.close()


def assert_invalid_request(subject: str, reply: Reply, reason: str | None = None) -> ReplyError:
    assert isinstance(reply, ReplyError), f"{subject} accepted it: {reply!r}"
    assert reply.code == "invalid_request", f"{subject}: {reply.code}: {reply.message}"
    assert reply.message, f"{subject}: no message: {reply!r}"
    assert reply.details.get("reason"), f"{subject}: no reason given: {reply!r}"
    if reason is not None:
        assert reply.details["reason"] == reason, f"{subject}: {reply!r}"
    return reply


def test_every_service_serves_its_commands(fleet: Fleet) -> None:
    """The enumeration the tests below rely on: every service's commands are there."""
    services = {subject.split(".")[2] for subject in fleet.commands}
    assert services == set(SERVICES)
    assert {s for s in fleet.commands if s.endswith(".ping")} == {f"sdv.cmd.{s}.ping" for s in SERVICES}
    assert {subject for subject, _ in FOUND_INTERNAL} <= set(fleet.commands)
    assert len(fleet.commands) >= 31  # the issue counted 31 commands


def test_the_asyncapi_document_describes_every_command_the_running_services_serve(fleet: Fleet) -> None:
    """docs/asyncapi.json is generated from routers built without running them (tools/asyncapi.py):
    the services running here serve exactly the commands it lists, with the same types."""
    doc = json.loads((Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json").read_text())
    described = {key for key in doc["channels"] if key.startswith("sdv.cmd.") and not key.endswith(".reply")}
    assert described == set(fleet.commands)
    for subject, spec in fleet.commands.items():
        request = doc["channels"][subject]["messages"]["request"]
        assert request["payload"] == {"$ref": f"#/components/schemas/{spec.request_type.__name__}"}, subject
        reply = doc["channels"][f"{subject}.reply"]["messages"]["reply"]
        result = reply["payload"]["oneOf"][0]["properties"]["result"]
        assert result == {"$ref": f"#/components/schemas/{spec.reply_type.__name__}"}, subject


async def test_every_command_answers_deeply_nested_json_with_invalid_request(fleet: Fleet) -> None:
    just_over = b"[" * (MAX_REQUEST_DEPTH + 1) + b"]" * (MAX_REQUEST_DEPTH + 1)
    for subject in fleet.commands:
        # Far past any recursion limit (it used to get no reply at all).
        reply = await fleet.send(subject, b"[" * 100_000 + b"]" * 100_000)
        assert_invalid_request(subject, reply, "too_deep")
        # Just over the limit, in a field the request type does not even have: the depth is
        # measured on the bytes, before any decoder runs.
        reply = await fleet.send(subject, b'{"unknown_field": ' + just_over + b"}")
        assert_invalid_request(subject, reply, "too_deep")
        # Brackets inside a string do not nest.
        reply = await fleet.send(subject, encode(["[" * 1000]))
        assert_invalid_request(subject, reply)
        assert isinstance(reply, ReplyError)
        assert reply.details["reason"] != "too_deep"


async def test_every_command_answers_malformed_or_wrongly_typed_json_with_invalid_request(
    fleet: Fleet,
) -> None:
    for subject in fleet.commands:
        for body in (b"", b"{not json", b'{"a": 1', b"\xff\xfe{}", b"[]", b"null", b'"text"', b"1e999"):
            reply = await fleet.send(subject, body)
            assert_invalid_request(f"{subject} {body!r}", reply)


async def test_device_announcements_have_the_same_bounds(fleet: Fleet) -> None:
    """The registry serves announcements with nats-py, not `register_command`: same layer."""
    subject = announce_subject("probe-device")
    assert_invalid_request(subject, await fleet.send(subject, b"[" * 100_000 + b"]" * 100_000),
                           "too_deep")
    assert_invalid_request(subject, await fleet.send(subject, HUGE_INTEGER))
    assert_invalid_request(subject, await fleet.send(subject, b'{"x":"' + b"y" * 300_000 + b'"}'),
                           "too_large")


def _fields(spec: CommandSpec) -> list[mi.Field]:
    info = mi.type_info(spec.request_type)
    return list(info.fields) if isinstance(info, mi.StructType) else []


async def test_every_command_answers_a_huge_integer_with_invalid_request(fleet: Fleet) -> None:
    for subject, spec in fleet.commands.items():
        reply = await fleet.send(subject, HUGE_INTEGER)  # used to get no reply at all
        assert_invalid_request(subject, reply)
        for field in _fields(spec):
            reply = await fleet.send(subject, b'{"%s": %s}' % (field.encode_name.encode(), HUGE_INTEGER))
            error = assert_invalid_request(f"{subject} $.{field.encode_name}", reply)
            assert error.details["path"] == f"$.{field.encode_name}"


async def test_every_command_answers_an_oversized_request_with_invalid_request(fleet: Fleet) -> None:
    max_payload = fleet.nc.max_payload
    for subject, spec in fleet.commands.items():
        assert spec.max_bytes < max_payload, f"{subject}: a request over its limit cannot be sent"
        padding = "x" * (spec.max_bytes - len(b'{"padding":""}'))
        at_the_limit = encode({"padding": padding})
        assert len(at_the_limit) == spec.max_bytes
        reply = await fleet.send(subject, encode({"padding": padding + "x"}))
        error = assert_invalid_request(subject, reply, "too_large")
        assert str(spec.max_bytes) in error.message
        # At the limit exactly, the request is decoded (and judged on its content).
        reply = await fleet.send(subject, at_the_limit)
        assert not (isinstance(reply, ReplyError) and reply.details.get("reason") == "too_large")


def _sample(t: mi.Type, name: str = "") -> Any:
    """A plausible value of type `t`, so that a request reaches its handler."""
    if isinstance(t, mi.StrType):
        return "1.0.0" if name == "version" else "probe-1"
    if isinstance(t, mi.BoolType):
        return False
    if isinstance(t, mi.IntType | mi.FloatType):
        return 1
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, mi.UnionType):
        return _sample(next(x for x in t.types if not isinstance(x, mi.NoneType)), name)
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return []
    if isinstance(t, mi.DictType):
        return {}
    if isinstance(t, mi.StructType):
        return {f.encode_name: _sample(f.type, f.name) for f in t.fields if f.required}
    return None


def _texts(t: mi.Type) -> bool:
    if isinstance(t, mi.UnionType):
        return any(_texts(x) for x in t.types)
    return isinstance(t, mi.StrType)


def _bad_requests(spec: CommandSpec) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(field, bad value, request) for every name, id or text a request carries: its string
    fields, the keys and values of its string maps, the items of its string lists."""
    fields = _fields(spec)
    base = {f.encode_name: _sample(f.type, f.name) for f in fields if f.required}
    for field in fields:
        key, t = field.encode_name, field.type
        for bad in BAD_NAMES:
            if _texts(t):
                yield key, bad, base | {key: bad}
            elif isinstance(t, mi.DictType) and _texts(t.key_type):
                yield key, bad, base | {key: {bad: "v" if _texts(t.value_type) else _sample(t.value_type)}}
                if _texts(t.value_type):
                    yield key, bad, base | {key: {"k": bad}}
            elif isinstance(t, mi.ListType) and _texts(t.item_type):
                yield key, bad, base | {key: [bad]}


async def test_bad_names_and_ids_are_invalid_request_not_internal(fleet: Fleet) -> None:
    tried = 0
    for subject, spec in fleet.commands.items():
        for field, bad, request in _bad_requests(spec):
            reply = await fleet.send(subject, encode(request))
            tried += 1
            what = f"{subject} $.{field}={bad[:20]!r}"
            if isinstance(reply, ReplyError):
                # Never `internal`, nor the untyped `error` a client cannot branch on.
                assert reply.code in ANSWERS_TO_BAD_INPUT, f"{what}: {reply.code}: {reply.message}"
            if bad in FOUND_INTERNAL.get((subject, field), []):
                error = assert_invalid_request(what, reply)
                assert error.details["path"] == f"$.{field}", f"{what}: {error!r}"
                assert field in error.message or error.details["path"].endswith(field)
    assert tried > 300
    # A good id still reaches the handler (answers `not_found`, not a refusal of the input).
    reply = await fleet.send("sdv.cmd.orchestrator.get", encode({"rollout_id": "no-such-rollout"}))
    assert isinstance(reply, ReplyError), reply
    assert reply.code == "not_found", reply
    reply = await fleet.send("sdv.cmd.packager.list", encode({"name": "door-watch"}))
    assert isinstance(reply, ReplyOk), reply
