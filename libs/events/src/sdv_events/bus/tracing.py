"""W3C trace context in NATS headers (OpenTelemetry), so one rollout is one trace end to end.

Spans leave the process over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set — every service, the CLI and the edge agent call
`configure_tracing` — with the exporter's own `OTEL_EXPORTER_OTLP_*` settings (headers,
timeout, compression, certificate). Batched; flushed when the process exits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

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

OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_provider: TracerProvider | None = None


def configure_tracing(service: str, *, exporter: SpanExporter | None = None,
                      export_timeout_s: float | None = None,
                      env: Mapping[str, str] = os.environ) -> TracerProvider:
    """Install one SDK tracer provider per process, named `sdv-<service>`; spans go to an OTLP
    collector when the environment names one. `SDV_OTEL_CONSOLE=1` prints them.
    `export_timeout_s` bounds each export (the exporter's default is 10 s, its retries
    included): a short-lived process (the CLI) waits no longer than that on its way out for a
    collector that does not answer."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": f"sdv-{service}"}))
        trace.set_tracer_provider(_provider)
        if env.get("SDV_OTEL_CONSOLE") == "1":
            _provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        if otlp_endpoint(env) is not None:
            # Imported here: it brings requests and protobuf, which a process not exporting
            # (the default) never needs.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=export_timeout_s)))
    if exporter is not None:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    return _provider


def otlp_endpoint(env: Mapping[str, str] = os.environ) -> str | None:
    """Where spans are exported (None: nowhere). Not logged here: the CLI's stdout is JSON."""
    return next((env[v] for v in OTLP_ENDPOINT_VARIABLES if env.get(v)), None)


@contextmanager
def span(name: str, *, parent: TraceContext | None = None,
         links: Sequence[TraceContext] = ()) -> Iterator[trace.Span]:
    """A span of this process's work, current inside the block: a child of `parent` (the trace
    an event or a request carried) when it has one, else of the current span."""
    ctx = None
    if parent is not None and parent.traceparent:
        ctx = extract(_carrier(parent))
    linked = [trace.Link(sc) for sc in (_span_context(t) for t in links) if sc is not None]
    with trace.get_tracer("sdv_events").start_as_current_span(name, context=ctx, links=linked) as s:
        yield s


def _carrier(tc: TraceContext) -> dict[str, str]:
    carrier = {"traceparent": tc.traceparent or ""}
    if tc.tracestate:
        carrier["tracestate"] = tc.tracestate
    return carrier


def _span_context(tc: TraceContext) -> trace.SpanContext | None:
    if not tc.traceparent:
        return None
    sc = trace.get_current_span(extract(_carrier(tc))).get_span_context()
    return sc if sc.is_valid else None


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers with the current span's `traceparent`/`tracestate` added."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


def current_trace(fallback: TraceContext | None = None) -> TraceContext:
    """The current span as the `trace` field of an event's metadata (`fallback` when no span
    is current)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" not in carrier and fallback is not None:
        return fallback
    return TraceContext(carrier.get("traceparent"), carrier.get("tracestate"))


def trace_id(tc: TraceContext) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`)."""
    parts = (tc.traceparent or "").split("-")
    return parts[1] if len(parts) == 4 else None


def trace_from_headers(headers: Mapping[str, str] | None) -> TraceContext:
    headers = headers or {}
    return TraceContext(headers.get("traceparent"), headers.get("tracestate"))
