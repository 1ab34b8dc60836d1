"""Serving commands with FastStream: kept apart from rpc.py so that processes that only speak
nats-py (the edge agent) do not import FastStream at all."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import msgspec
from faststream.nats import NatsMessage, NatsRouter

from sdv_events.bus.request_limits import MAX_REQUEST_BYTES
from sdv_events.bus.rpc import Handler, Req, serve_one
from sdv_events.subjects import command_subject


@dataclass(frozen=True)
class CommandSpec:
    """What a served command accepts (its request type and size limit in bytes) and what it
    answers: `reply_type`, the handler's return annotation (the AsyncAPI document's reply)."""

    request_type: type[msgspec.Struct]
    max_bytes: int
    reply_type: Any = None


_commands: dict[str, CommandSpec] = {}


def registered_commands() -> Mapping[str, CommandSpec]:
    """Every command subject registered in this process (what a test enumerates to send every
    command the same hostile input, so a new command is covered without being listed)."""
    return MappingProxyType(_commands)


def reply_type_of(handler: Handler[Any]) -> Any:
    """The handler's annotated return type: what `result` holds in an `ok` reply. Required, so
    that the contract a client reads (docs/asyncapi.json) is the one the code answers."""
    try:
        hints = typing.get_type_hints(handler)
    except NameError as exc:
        raise TypeError(f"the reply type of command handler {handler.__qualname__} cannot be "
                        f"resolved ({exc}): import it at module level") from None
    if "return" not in hints:
        raise TypeError(f"command handler {handler.__qualname__} must annotate its reply type")
    return hints["return"]


async def _body_as_is(msg: NatsMessage) -> bytes:
    """FastStream's decoder would `json.loads` the body before the handler runs and, when that
    raises (nesting deeper than the recursion limit, an integer of over 4300 digits), drop the
    request without a reply. Commands decode their own bodies, within bounds (`serve_one`)."""
    return msg.body


def register_command(
    router: NatsRouter,
    service: str,
    name: str,
    request_type: type[Req],
    handler: Handler[Req],
    *,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> None:
    """Serve `sdv.cmd.<service>.<name>` in the service's queue group (replicas share the load).
    A request over `max_bytes` is answered `invalid_request` without being decoded."""
    subject = command_subject(service, name)
    _commands[subject] = CommandSpec(request_type, max_bytes, reply_type_of(handler))

    @router.subscriber(subject, queue=f"sdv-{service}", decoder=_body_as_is)
    async def _serve(msg: NatsMessage) -> bytes:
        return await serve_one(msg.body, subject, msg.headers or {}, request_type, handler,
                               max_bytes=max_bytes)
