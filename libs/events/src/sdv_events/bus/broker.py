"""The one FastStream NATS broker factory every service uses."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.security import NatsCredentials, NatsSecurity
from faststream.security import BaseSecurity

from sdv_events.auth.client_tls import tls_options
from sdv_events.bus.tracing import configure_tracing


def make_broker(url: str, service: str, *, credentials: str | None = None,
                ca_file: str | Path | None = None, **options: Any) -> NatsBroker:
    """Broker with OpenTelemetry middleware (trace context in and out of headers), a named
    connection for `nats server report connections`, and reconnects that never give up.
    `credentials`: a `.creds` file (operator mode); `ca_file`: the CA to pin (client_tls.py)."""
    provider = configure_tracing(service)
    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 1)
    options.setdefault("connect_timeout", 5)
    return NatsBroker(
        url,
        name=f"sdv-{service}",
        middlewares=(NatsTelemetryMiddleware(tracer_provider=provider),),
        logger=logging.getLogger(f"sdv.{service}.faststream"),
        security=_security(url, credentials, ca_file),
        **options,
    )


def _security(url: str, credentials: str | None, ca_file: str | Path | None) -> BaseSecurity | None:
    tls = tls_options(url, ca_file)
    if not tls and credentials is None:
        return None
    context, first = tls.get("tls"), bool(tls.get("tls_handshake_first"))
    if credentials is not None:
        return NatsCredentials(credentials, ssl_context=context, tls_handshake_first=first)
    return NatsSecurity(ssl_context=context, tls_handshake_first=first)
