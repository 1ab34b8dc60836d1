"""Commands over NATS request/reply: `sdv.cmd.<service>.<command>`, typed replies, typed errors.

Wire format: the request body is the command Struct as JSON; the reply is `{"status": "ok",
"result": …}` or `{"status": "error", "code": …, "message": …, "details": {…}}`. The client
turns an error reply back into the `CommandError` subclass of its code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient

from sdv_events.bus.actor import ACTOR_HEADER, actor_of
from sdv_events.bus.denials import PublishDenied, denials_of
from sdv_events.bus.request_fields import field_holding, nul_path
from sdv_events.bus.request_limits import MAX_REQUEST_BYTES, MAX_REQUEST_DEPTH, check_request
from sdv_events.bus.tracing import current_trace, inject, trace_from_headers
from sdv_events.codec import decode_as, encode
from sdv_events.envelope import Metadata
from sdv_events.errors import (
    DecodeError,
    DomainError,
    IdempotencyConflict,
    SdvError,
    UnknownEventType,
    UpgradeNeeded,
)
from sdv_events.idempotency import IdempotencyKey, idempotency_key
from sdv_events.ids import InvalidStreamId, uuid7
from sdv_events.subjects import command_subject

T = TypeVar("T")
Req = TypeVar("Req", bound=msgspec.Struct)
log = structlog.get_logger("sdv.rpc")

COMMAND_ID_HEADER = "Sdv-Command-Id"
CORRELATION_HEADER = "Sdv-Correlation-Id"


class ReplyOk(msgspec.Struct, frozen=True, tag="ok", tag_field="status"):
    result: msgspec.Raw = msgspec.Raw(b"null")


class ReplyError(msgspec.Struct, frozen=True, tag="error", tag_field="status"):
    code: str
    message: str
    details: dict[str, str] = {}


Reply = ReplyOk | ReplyError


class CommandError(SdvError):
    """A command failed; `code` is stable (clients branch on it), `message` is for people."""

    code = "error"

    def __init__(self, message: str, *, details: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})


class InvalidRequest(CommandError):
    code = "invalid_request"


class NotFound(CommandError):
    code = "not_found"


class Conflict(CommandError):
    code = "conflict"


class Rejected(CommandError):
    code = "rejected"


class Forbidden(CommandError):
    code = "forbidden"


class RateLimited(CommandError):
    """Too many requests from this source: `details["retry_after_s"]` says when to try again."""

    code = "rate_limited"


class Internal(CommandError):
    code = "internal"


class ServiceUnavailable(CommandError):
    code = "unavailable"


class RequestTimeout(CommandError):
    code = "timeout"


class UpgradeRequired(CommandError):
    """The service cannot read an event of the stream (written by a newer build): not the
    request's fault; retry once the service is upgraded."""

    code = "upgrade_needed"


_BY_CODE: dict[str, type[CommandError]] = {
    cls.code: cls
    for cls in (InvalidRequest, NotFound, Conflict, Rejected, Forbidden, RateLimited, Internal,
                ServiceUnavailable, RequestTimeout, UpgradeRequired)
}


def command_error(code: str, message: str) -> CommandError:
    """The typed error of a refusal's code, raised where a service answers a command. A code
    that names no error of the contract (a decider's own, `yanked`) is a `Rejected` with the
    code in `details["reason"]`: clients branch on the codes above, people read the message."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return Rejected(message, details={"reason": code})
    return cls(message)


def error_from_reply(reply: ReplyError) -> CommandError:
    """The client side: the reply's code is kept even when this build does not know it (a
    newer service's), so a caller can still branch on it."""
    cls = _BY_CODE.get(reply.code, Rejected)
    err = cls(reply.message, details=reply.details)
    err.code = reply.code
    return err


@dataclass(frozen=True)
class RequestInfo:
    subject: str
    actor: str  # who asked: `operator:<name>` as the server vouches for it (actor.py), or a claim
    command_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    # The decoded request (set by `serve_one` before the handler runs).
    request: msgspec.Struct | None = None

    @property
    def idempotency_key(self) -> IdempotencyKey:
        """The request's idempotency key for the command runner: its command id, scoped by
        this subject (`sdv.cmd.<service>.<command>`), with the request's fingerprint."""
        if self.request is None:
            raise RuntimeError("no decoded request: the key exists once serve_one decoded it")
        return idempotency_key(self.subject, self.command_id, self.request)

    def metadata(self) -> Metadata:
        """Event metadata for what this request causes: who asked, and its trace — the span
        handling the request (a child of the sender's), else the sender's from the headers."""
        return Metadata(
            correlation_id=self.headers.get(CORRELATION_HEADER, self.command_id),
            causation_id=self.command_id, actor=self.actor,
            trace=current_trace(fallback=trace_from_headers(self.headers)),
        )


Handler = Callable[[Req, RequestInfo], Awaitable[Any]]


async def serve_one(
    body: bytes,
    subject: str,
    headers: Mapping[str, str],
    request_type: type[Req],
    handler: Handler[Req],
    *,
    max_bytes: int = MAX_REQUEST_BYTES,
    max_depth: int = MAX_REQUEST_DEPTH,
) -> bytes:
    """Bound → decode → handle → encode the reply. Every failure becomes a typed error reply:
    a request over `max_bytes`, nested deeper than `max_depth`, malformed or of the wrong shape
    is `invalid_request` naming the reason and the path; it never reaches the handler. So is
    text holding a NUL, and a name or id the handler finds is no valid stream id (the reply names
    the field that sent it)."""
    info = RequestInfo(
        subject=subject,
        actor=actor_of(headers),
        command_id=headers.get(COMMAND_ID_HEADER) or str(uuid7()),
        headers=headers,
    )
    try:
        check_request(body, max_bytes=max_bytes, max_depth=max_depth)
        request = decode_as(body, request_type)
        if (path := nul_path(body, request)) is not None:
            raise DecodeError("invalid_value", "text may not contain a NUL character", path=path)
        info = dataclasses.replace(info, request=request)
        result = await _handle(handler, request, info)
        return encode(ReplyOk(msgspec.Raw(encode(result))))
    except UpgradeNeeded as err:
        reply = ReplyError(UpgradeRequired.code, str(err), {"stream_id": err.stream_id,
                                                            "type": err.type_name})
    except UnknownEventType as err:  # read by the handler (the request decoded): too old a build
        reply = ReplyError(UpgradeRequired.code, str(err), {"type": err.type_name})
    except DecodeError as err:
        reply = ReplyError("invalid_request", str(err), {"reason": err.reason, "path": err.path})
    except CommandError as err:
        reply = ReplyError(err.code, err.message, err.details)
    except DomainError as err:
        reply = ReplyError(err.code, err.message)
    except IdempotencyConflict as err:
        reply = ReplyError(Conflict.code, str(err), {"command": err.command,
                                                     "command_id": err.command_id})
    except Exception as err:
        log.exception("command_failed", subject=subject, command_id=info.command_id)
        reply = ReplyError("internal", f"{type(err).__name__}: {err}")
    return encode(reply)


async def _handle(handler: Handler[Req], request: Req, info: RequestInfo) -> Any:
    """Run the handler; a stream id it could not build from a request field is that field's
    fault (`invalid_request` at its path), any other invalid stream id a bug (`internal`)."""
    try:
        return await handler(request, info)
    except InvalidStreamId as err:
        path = field_holding(request, err.stream_id)
        if path is None:
            raise
        raise DecodeError("invalid_value", f"not a valid name or id: {err}", path=path) from None


class CommandClient:
    """The typed client side: `await client.call("registry", "accept", Accept(...), DeviceView)`."""

    def __init__(self, nc: NatsClient, *, actor: str = "sdk", timeout: float = 5.0) -> None:
        self.nc = nc
        self.actor = actor
        self.timeout = timeout

    async def call(
        self,
        service: str,
        name: str,
        request: msgspec.Struct,
        result_type: type[T],
        *,
        timeout: float | None = None,
        command_id: str | None = None,
    ) -> T:
        return await self.request(command_subject(service, name), request, result_type, timeout=timeout,
                                  command_id=command_id, answerer=f"{service} service")

    async def request(
        self,
        subject: str,
        request: msgspec.Struct,
        result_type: type[T],
        *,
        timeout: float | None = None,
        command_id: str | None = None,
        answerer: str = "one",
    ) -> T:
        """The same wire format on any subject (a device's ops: `sdv.device.<id>.ops.<op>`)."""
        headers = inject({ACTOR_HEADER: self.actor, COMMAND_ID_HEADER: command_id or str(uuid7())})
        sending = self.nc.request(subject, encode(request), timeout=timeout or self.timeout,
                                  headers=headers)
        denials = denials_of(self.nc)
        try:
            msg = await (sending if denials is None else denials.guard(sending, subject))
        except PublishDenied as denied:
            raise Forbidden(f"{denied}: these credentials may not send this request",
                            details={"subject": subject, "reason": "permissions_violation"}) from None
        except nats.errors.NoRespondersError:
            raise ServiceUnavailable(f"no {answerer} answers {subject}",
                                     details={"subject": subject}) from None
        except nats.errors.TimeoutError:
            raise RequestTimeout(f"{subject}: no reply within {timeout or self.timeout:.1f}s",
                                 details={"subject": subject}) from None
        try:
            reply: Reply = decode_as(msg.data, Reply)  # type: ignore[arg-type]
        except DecodeError as err:
            raise Internal(f"{subject}: unreadable reply ({err})") from None
        if isinstance(reply, ReplyError):
            raise error_from_reply(reply)
        try:
            return decode_as(bytes(reply.result), result_type)
        except DecodeError as err:
            raise Internal(f"{subject}: reply does not match {result_type!r} ({err})") from None
