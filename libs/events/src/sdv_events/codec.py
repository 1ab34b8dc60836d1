"""Encoding and untrusted decoding of envelopes and bodies.

Every failure while decoding becomes one `DecodeError` naming the reason and the JSON path —
callers never see msgspec's or the json module's own exceptions.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from sdv_events.envelope import Envelope, Metadata, TraceContext
from sdv_events.errors import DecodeError, DecodeReason, UnknownEventType
from sdv_events.registry import EventRegistry, default_registry

T = TypeVar("T")
MAX_MESSAGE_BYTES = 1024 * 1024

_encoder = msgspec.json.Encoder()
_PATH_RE = re.compile(r" - at `(\$[^`]*)`$")
# A value of the right type outside its constraints (pattern, length, bounds): a bad value.
_CONSTRAINT_RE = re.compile(r"^Expected `[^`]+` (matching regex|of length|[<>]=? |that is a multiple)")


class WireEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """An envelope whose body is still raw JSON: decoded lazily, or relayed without decoding."""

    event_id: uuid.UUID
    stream_id: str
    version: int
    type: str
    schema_version: int
    occurred_at: datetime
    data: msgspec.Raw
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    trace: TraceContext = TraceContext()
    position: int = 0


def _classify(message: str) -> DecodeReason:
    if message.startswith("Object missing required field"):
        return "missing_field"
    if _CONSTRAINT_RE.match(message):
        return "invalid_value"
    if message.startswith("Expected `"):
        return "wrong_type"
    return "invalid_value"


def _validation_error(exc: msgspec.ValidationError, prefix: str = "") -> DecodeError:
    text = str(exc)
    match = _PATH_RE.search(text)
    path = match.group(1) if match else "$"
    detail = text[: match.start()] if match else text
    if prefix:
        path = prefix + path[1:]
    return DecodeError(_classify(detail), detail, path=path)


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


# One reusable decoder per target type: same result as `msgspec.json.decode(..., type=)`
# without re-resolving the type on every call (a hot path of reads, folds and the relay).
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    return decoder


def decode_as(payload: bytes, type_: type[T], *, path: str = "$") -> T:
    """Decode untrusted JSON into `type_`, raising only `DecodeError`."""
    try:
        return _decoder(type_).decode(payload)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, path) from None
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecodeError("malformed", str(exc), path=path) from None


def decode_body(
    type_name: str, payload: bytes, *, registry: EventRegistry = default_registry, path: str = "$"
) -> msgspec.Struct:
    resolved = registry.resolve(type_name)
    if resolved is None:
        raise UnknownEventType(type_name)
    cls, upcasters = resolved
    if not upcasters:
        return decode_as(payload, cls, path=path)
    body = decode_as(payload, dict[str, Any], path=path)
    try:
        for step in upcasters:
            body = step(body)
        return msgspec.convert(body, cls)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, path) from None
    except Exception as exc:  # an upcaster is code over untrusted data: contain its failure
        raise DecodeError("invalid_value", f"upcasting {type_name}: {exc!r}", path=path) from None


def decode_envelope(
    payload: bytes, *, registry: EventRegistry = default_registry, max_bytes: int = MAX_MESSAGE_BYTES
) -> Envelope:
    """Untrusted bytes → a typed `Envelope` whose `data` is the registered body Struct."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise DecodeError("malformed", f"expected bytes, got {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise DecodeError("too_large", f"{len(payload)} bytes exceeds the {max_bytes}-byte limit")
    raw = decode_as(bytes(payload), WireEnvelope)
    body = decode_body(raw.type, bytes(raw.data), registry=registry, path="$.data")
    return Envelope(
        event_id=raw.event_id, stream_id=raw.stream_id, version=raw.version, type=raw.type,
        schema_version=raw.schema_version, occurred_at=raw.occurred_at, data=body,
        correlation_id=raw.correlation_id, causation_id=raw.causation_id, actor=raw.actor,
        trace=raw.trace, position=raw.position,
    )


def encode_metadata(meta: Metadata) -> bytes:
    return _encoder.encode(meta)


def decode_metadata(payload: bytes) -> Metadata:
    return decode_as(payload, Metadata)
