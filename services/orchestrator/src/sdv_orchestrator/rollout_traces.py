"""One rollout, one trace: events no request caused — the ticker's waves and timeouts, devices'
reports — are recorded in the trace of the request that created the rollout (the CLI's span
when an operator created it). Inside a span of that trace already (a report handled in the span
of the device's fact) they are that span's children; elsewhere, the create span's."""

from __future__ import annotations

import msgspec

from sdv_events.bus.tracing import current_trace, trace_id
from sdv_events.envelope import Metadata, TraceContext
from sdv_events.store import EventStore

# Rollouts whose trace is remembered (oldest forgotten first: it is read again when needed).
MAX_REMEMBERED = 10_000


class RolloutTraces:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._known: dict[str, TraceContext] = {}

    async def of(self, stream_id: str) -> TraceContext:
        known = self._known.get(stream_id)
        if known is None:
            known = await self.store.stream_trace(stream_id)
            if known.traceparent is None:
                return known  # no stream yet (being created), or one recorded without a trace
            if len(self._known) >= MAX_REMEMBERED:
                del self._known[next(iter(self._known))]
            self._known[stream_id] = known
        return known

    async def metadata(self, stream_id: str, metadata: Metadata) -> Metadata:
        """`metadata` with the trace its events belong in (a request's own trace wins)."""
        if metadata.trace.traceparent:
            return metadata
        rollout = await self.of(stream_id)
        here = current_trace()
        if rollout.traceparent is None or trace_id(here) == trace_id(rollout):
            return msgspec.structs.replace(metadata, trace=here)
        return msgspec.structs.replace(metadata, trace=rollout)
