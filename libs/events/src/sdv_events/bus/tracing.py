"""W3C trace context in NATS headers (OpenTelemetry), so one rollout is one trace end to end."""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from sdv_events.envelope import TraceContext

_provider: TracerProvider | None = None


def configure_tracing(service: str, *, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install one SDK tracer provider per process. `SDV_OTEL_CONSOLE=1` prints spans."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": f"sdv-{service}"}))
        trace.set_tracer_provider(_provider)
        if os.environ.get("SDV_OTEL_CONSOLE") == "1":
            _provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if exporter is not None:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    return _provider


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers with the current span's `traceparent`/`tracestate` added."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


def current_trace() -> TraceContext:
    """The current span as the `trace` field of an event's metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return TraceContext(carrier.get("traceparent"), carrier.get("tracestate"))


def trace_from_headers(headers: Mapping[str, str] | None) -> TraceContext:
    headers = headers or {}
    return TraceContext(headers.get("traceparent"), headers.get("tracestate"))
