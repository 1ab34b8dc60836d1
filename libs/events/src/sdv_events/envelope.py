"""The envelope every event travels in, in the store and on the bus."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


class TraceContext(msgspec.Struct, frozen=True, omit_defaults=True):
    """W3C trace context (https://www.w3.org/TR/trace-context/) as carried in headers."""

    traceparent: str | None = None
    tracestate: str | None = None


class Metadata(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who caused an event and why; stored as the event's `metadata` column."""

    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    trace: TraceContext = TraceContext()


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded event. `data` is the typed body (a registered event Struct)."""

    event_id: uuid.UUID
    stream_id: str
    version: int
    type: str
    schema_version: int
    occurred_at: datetime
    data: Any
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    trace: TraceContext = TraceContext()
    # Set once stored: PostgreSQL global position (0 while not yet stored).
    position: int = 0

    @property
    def metadata(self) -> Metadata:
        return Metadata(self.correlation_id, self.causation_id, self.actor, self.trace)
