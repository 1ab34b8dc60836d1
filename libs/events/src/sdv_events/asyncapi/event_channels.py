"""Which subject each registered event type travels on: `sdv.evt.<category>.<entity>.<Name>`,
the category being the one its writer builds the stream id with (`stream_id(category, …)`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from sdv_events.registry import EventRegistry, short_name
from sdv_events.schemas.monitor import ALERT_CATEGORY, FACTS_CATEGORY

AGENT_CATEGORY = "agent"
# A writer's events go to one category, except the types listed below it.
_CATEGORY_OF_WRITER = {
    "packager": "package",
    "registry": "device",
    "orchestrator": "rollout",
    "monitor": FACTS_CATEGORY,
    "agent": AGENT_CATEGORY,
}
_CATEGORY_OF_TYPE = {
    "orchestrator.PolicySet": "policy",
    "orchestrator.PolicyDeleted": "policy",
    "monitor.AlertRaised": ALERT_CATEGORY,
    "monitor.AlertAcknowledged": ALERT_CATEGORY,
    "monitor.AlertResolved": ALERT_CATEGORY,
}
# The address parameter naming a category's entity, and what it holds.
ENTITY_PARAMETERS = {
    "package": ("package", "The package name."),
    "device": ("device_id", "The device id."),
    "rollout": ("rollout_id", "The rollout id."),
    "policy": ("policy", "The rollout policy's name."),
    FACTS_CATEGORY: ("device_id", "The device whose fact the monitor recorded."),
    ALERT_CATEGORY: ("alert_key", "The alert's condition key (one stream per condition)."),
    AGENT_CATEGORY: ("device_id", "The device whose agent published the fact."),
}


class UnmappedEventType(LookupError):
    """An event type whose subject category the document does not know: add it above."""


def category_of(event_type: str) -> str:
    """`orchestrator.WaveStarted.v1` → `rollout`; `orchestrator.PolicySet.v1` → `policy`."""
    writer, _, rest = event_type.partition(".")
    name = f"{writer}.{rest.rsplit('.v', 1)[0]}"
    category = _CATEGORY_OF_TYPE.get(name) or _CATEGORY_OF_WRITER.get(writer)
    if category is None:
        raise UnmappedEventType(f"no subject category known for {event_type!r}: add its writer "
                                "or type to sdv_events/asyncapi/event_channels.py")
    return category


@dataclass(frozen=True)
class EventChannel:
    """One subject pattern and every registered version of the event it carries."""

    category: str
    name: str  # the short name, the subject's last token
    versions: tuple[tuple[str, int, type[msgspec.Struct]], ...]  # (full type, version, body)

    @property
    def parameter(self) -> tuple[str, str]:
        return ENTITY_PARAMETERS[self.category]

    @property
    def address(self) -> str:
        return f"sdv.evt.{self.category}.{{{self.parameter[0]}}}.{self.name}"


def event_channels(registry: EventRegistry) -> Iterator[EventChannel]:
    grouped: dict[tuple[str, str], list[tuple[str, int, type[msgspec.Struct]]]] = {}
    for full in registry.names():
        resolved = registry.resolve(full)
        assert resolved is not None  # a name the registry lists resolves to its own class
        cls = resolved[0]
        version = int(full.rsplit(".v", 1)[1])
        grouped.setdefault((category_of(full), short_name(full)), []).append((full, version, cls))
    for (category, name), versions in sorted(grouped.items()):
        yield EventChannel(category, name, tuple(sorted(versions, key=lambda v: v[1])))
