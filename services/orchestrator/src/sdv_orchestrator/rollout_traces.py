"""One rollout, one trace, one correlation: events no request caused — the ticker's waves and
timeouts, devices' reports — are recorded in the trace of the request that created the rollout
(the CLI's span when an operator created it) and under its correlation id. Inside a span of that
trace already (a report handled in the span of the device's fact) they are that span's
children; elsewhere, the create span's."""

from __future__ import annotations

import msgspec

from sdv_events.bus.tracing import current_trace, trace_id
from sdv_events.envelope import Metadata
from sdv_events.store import EventStore

# Rollouts whose first event's metadata is remembered (oldest forgotten first: read again when needed).
MAX_REMEMBERED = 10_000


class RolloutTraces:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._known: dict[str, Metadata] = {}

    async def of(self, stream_id: str) -> Metadata:
        """The metadata of the rollout's first event (its create)."""
        known = self._known.get(stream_id)
        if known is None:
            known = await self.store.stream_metadata(stream_id)
            if known.trace.traceparent is None and known.correlation_id is None:
                return known  # no stream yet (being created), or one recorded without either
            if len(self._known) >= MAX_REMEMBERED:
                del self._known[next(iter(self._known))]
            self._known[stream_id] = known
        return known

    async def metadata(self, stream_id: str, metadata: Metadata) -> Metadata:
        """`metadata` with the trace its events belong in (a request's own trace wins) and,
        when it has none, the rollout's correlation id."""
        if metadata.trace.traceparent and metadata.correlation_id:
            return metadata
        rollout = await self.of(stream_id)
        if not metadata.correlation_id and rollout.correlation_id:
            metadata = msgspec.structs.replace(metadata, correlation_id=rollout.correlation_id)
        if metadata.trace.traceparent:
            return metadata
        here = current_trace()
        if rollout.trace.traceparent is None or trace_id(here) == trace_id(rollout.trace):
            return msgspec.structs.replace(metadata, trace=here)
        return msgspec.structs.replace(metadata, trace=rollout.trace)
