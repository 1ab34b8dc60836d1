"""Typed commands over NATS request/reply on a real server: results, typed errors, trace context."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import nats
import pytest
from faststream.nats import NatsRouter
from nats.aio.client import Client as NatsClient

from sdv_events.bus import (
    CommandClient,
    Internal,
    InvalidRequest,
    NotFound,
    Rejected,
    RequestInfo,
    ServiceUnavailable,
    configure_tracing,
    make_broker,
    register_command,
)
from sdv_events.errors import DomainError


class Greet(msgspec.Struct, frozen=True):
    name: str
    times: int = 1


class Greeting(msgspec.Struct, frozen=True):
    text: str
    actor: str
    command_id: str


class GreetWithWrongTypes(msgspec.Struct, frozen=True):
    """What a buggy or hostile client sends on the same subject."""

    name: int
    times: str


Serve = Callable[[Callable[[Greet, RequestInfo], Awaitable[Any]]], Awaitable[str]]


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[CommandClient]:
    nc: NatsClient = await nats.connect(nats_url)
    yield CommandClient(nc, actor="operator-1", timeout=3.0)
    await nc.drain()


@pytest.fixture
async def serve(nats_url: str) -> AsyncIterator[Serve]:
    """Start a broker serving `sdv.cmd.<fresh service>.greet` with the given handler."""
    brokers = []

    async def start(handler: Callable[[Greet, RequestInfo], Awaitable[Any]]) -> str:
        service = f"svc{uuid.uuid4().hex[:8]}"
        broker = make_broker(nats_url, service)
        router = NatsRouter()
        register_command(router, service, "greet", Greet, handler)
        broker.include_router(router)
        await broker.start()
        brokers.append(broker)
        # start() queues SUB without waiting for the server. nats-py's flush() writes its PING
        # straight to the socket, ahead of commands still queued for its flusher task, so one
        # flush can return before the server saw the SUB; the second is ordered after it.
        await broker.connection.flush()
        await broker.connection.flush()
        return service

    yield start
    for broker in brokers:
        await broker.stop()


async def greet(request: Greet, info: RequestInfo) -> Greeting:
    return Greeting(" ".join([f"hello {request.name}"] * request.times), info.actor, info.command_id)


async def test_call_returns_the_typed_result(serve: Serve, client: CommandClient) -> None:
    service = await serve(greet)

    result = await client.call(service, "greet", Greet("ada", times=2), Greeting, command_id="cmd-42")

    assert result == Greeting("hello ada hello ada", actor="operator-1", command_id="cmd-42")


async def test_each_call_gets_its_own_command_id(serve: Serve, client: CommandClient) -> None:
    service = await serve(greet)

    first = await client.call(service, "greet", Greet("a"), Greeting)
    second = await client.call(service, "greet", Greet("a"), Greeting)

    assert first.command_id
    assert first.command_id != second.command_id


async def test_not_found_arrives_as_not_found(serve: Serve, client: CommandClient) -> None:
    async def handler(request: Greet, info: RequestInfo) -> Greeting:
        raise NotFound(f"no device {request.name}", details={"device_id": request.name})

    service = await serve(handler)

    with pytest.raises(NotFound) as info:
        await client.call(service, "greet", Greet("car-9"), Greeting)

    assert info.value.code == "not_found"
    assert info.value.message == "no device car-9"
    assert info.value.details == {"device_id": "car-9"}


async def test_domain_error_arrives_as_rejected_with_its_code(serve: Serve, client: CommandClient) -> None:
    async def handler(request: Greet, info: RequestInfo) -> Greeting:
        raise DomainError("device was already accepted", code="already_accepted")

    service = await serve(handler)

    with pytest.raises(Rejected) as info:
        await client.call(service, "greet", Greet("car-9"), Greeting)

    assert info.value.code == "already_accepted"
    assert info.value.message == "device was already accepted"


async def test_wrong_field_type_is_invalid_request_with_reason_and_path(
    serve: Serve, client: CommandClient
) -> None:
    calls: list[Greet] = []

    async def handler(request: Greet, info: RequestInfo) -> Greeting:
        calls.append(request)
        return await greet(request, info)

    service = await serve(handler)

    with pytest.raises(InvalidRequest) as info:
        await client.call(service, "greet", GreetWithWrongTypes(name=7, times="x"), Greeting)

    assert info.value.code == "invalid_request"
    assert info.value.details == {"reason": "wrong_type", "path": "$.name"}
    assert calls == []  # the handler never sees an invalid request


async def test_missing_field_is_invalid_request(serve: Serve, client: CommandClient) -> None:
    class Empty(msgspec.Struct):
        pass

    service = await serve(greet)

    with pytest.raises(InvalidRequest) as info:
        await client.call(service, "greet", Empty(), Greeting)

    assert info.value.details["reason"] == "missing_field"


async def test_unexpected_handler_failure_is_internal(serve: Serve, client: CommandClient) -> None:
    async def handler(request: Greet, info: RequestInfo) -> Greeting:
        raise RuntimeError("database on fire")

    service = await serve(handler)

    with pytest.raises(Internal) as info:
        await client.call(service, "greet", Greet("x"), Greeting)

    assert "database on fire" in info.value.message


async def test_reply_not_matching_the_expected_type_is_internal(serve: Serve, client: CommandClient) -> None:
    service = await serve(greet)

    with pytest.raises(Internal, match="does not match"):
        await client.call(service, "greet", Greet("x"), int)


async def test_service_nobody_serves_is_unavailable(client: CommandClient) -> None:
    with pytest.raises(ServiceUnavailable) as info:
        await client.call(f"ghost{uuid.uuid4().hex[:6]}", "greet", Greet("x"), Greeting, timeout=2.0)

    assert info.value.code == "unavailable"


async def test_trace_context_travels_with_the_request(serve: Serve, client: CommandClient) -> None:
    seen: list[RequestInfo] = []

    async def handler(request: Greet, info: RequestInfo) -> Greeting:
        seen.append(info)
        return await greet(request, info)

    service = await serve(handler)
    tracer = configure_tracing("rpc-test").get_tracer(__name__)

    with tracer.start_as_current_span("operator-request") as span:
        await client.call(service, "greet", Greet("x"), Greeting)
        trace_id = format(span.get_span_context().trace_id, "032x")

    assert len(seen) == 1
    traceparent = seen[0].headers["traceparent"]
    version, received_trace_id, parent_span_id, _flags = traceparent.split("-")
    assert version == "00"
    assert received_trace_id == trace_id
    assert int(parent_span_id, 16) != 0
    assert trace_id != "0" * 32
