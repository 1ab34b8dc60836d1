"""Which service's event store owns a stream, by the stream's category: the one to ask for its
history (`sdv_events.history`) when a consumer finds a gap in its versions."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sdv_events.ids import split_stream_id

STREAM_OWNERS: Mapping[str, str] = MappingProxyType({
    "package": "packager",
    "device": "registry",
    "operator": "registry",
    "rollout": "orchestrator",
    "policy": "orchestrator",
    "facts": "monitor",
    "alert": "monitor",
})


def owner_of(stream_id: str) -> str | None:
    """The service whose store holds `stream_id` (`rollout-42` → `orchestrator`); None for
    streams no service stores — `agent-<device>` facts live in the device's own outbox."""
    category, _ = split_stream_id(stream_id)
    return STREAM_OWNERS.get(category)
