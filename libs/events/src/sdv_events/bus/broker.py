"""The one FastStream NATS broker factory every service uses."""

from __future__ import annotations

import logging
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware

from sdv_events.bus.tracing import configure_tracing


def make_broker(url: str, service: str, **options: Any) -> NatsBroker:
    """Broker with OpenTelemetry middleware (trace context in and out of headers), a named
    connection for `nats server report connections`, and reconnects that never give up."""
    provider = configure_tracing(service)
    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 1)
    options.setdefault("connect_timeout", 5)
    return NatsBroker(
        url,
        name=f"sdv-{service}",
        middlewares=(NatsTelemetryMiddleware(tracer_provider=provider),),
        logger=logging.getLogger(f"sdv.{service}.faststream"),
        **options,
    )
