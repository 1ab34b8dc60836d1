"""What dashboards hear once the read model changed. Each transaction of the projection sends
one PostgreSQL notification (`pg_notify`) naming what its events were about — category,
rollout, device — which PostgreSQL delivers at the commit and only then, to every replica of the
monitor that listens (adapters/view_changes.py). A page that fetches its live part again on it
finds the change. (Notices taken from the bus came a hop early: a device's fact is on the bus
before the monitor has recorded it and its views show it, so a busy machine left pages stale.)"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from sdv_events.envelope import Envelope
from sdv_events.ids import split_stream_id
from sdv_events.registry import short_name
from sdv_events.schemas.monitor import DeviceFactRecorded

# pg_notify refuses payloads of 8000 bytes or more; a notice about more than this many things is
# sent as one about anything (every page fetches again).
MAX_ENTRIES = 64
MAX_BYTES = 7000
ANYTHING = "*"


class Entry(msgspec.Struct, frozen=True, array_like=True):
    category: str  # `*`: anything may have changed
    rollout_id: str | None
    device_id: str | None
    type: str  # the short name of (one of) the event type(s)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[Entry]).decode


def channel(schema: str) -> str:
    """The notification channel of the read model in `schema` (at most 63 bytes, as PostgreSQL
    allows)."""
    return f"sdv_views_{schema}"[:63]


def entry_of(event: Envelope) -> Entry:
    category, entity = split_stream_id(event.stream_id)
    data = event.data
    rollout: object
    device: object
    if isinstance(data, DeviceFactRecorded):  # the device's own words, as the live feed shows them
        rollout, device, type_ = data.data.get("rollout_id"), entity, data.fact_type
    else:
        rollout = entity if category == "rollout" else getattr(data, "rollout_id", None)
        device = entity if category == "device" else getattr(data, "device_id", None)
        type_ = event.type
    return Entry(category, rollout if isinstance(rollout, str) else None,
                 device if isinstance(device, str) else None, short_name(type_))


def notice(events: Sequence[Envelope]) -> str:
    """The payload for a transaction that applied `events`: one entry per (category, rollout,
    device)."""
    entries: dict[tuple[str, str | None, str | None], Entry] = {}
    for event in events:
        entry = entry_of(event)
        entries.setdefault((entry.category, entry.rollout_id, entry.device_id), entry)
    payload = _encode(list(entries.values()))
    if len(entries) > MAX_ENTRIES or len(payload) > MAX_BYTES:
        payload = _encode([Entry(ANYTHING, None, None, f"{len(events)} events")])
    return payload.decode()


def entries_of(payload: str) -> list[Entry]:
    """A notice back (one entry about anything when it cannot be read)."""
    try:
        return _decode(payload)
    except msgspec.DecodeError:
        return [Entry(ANYTHING, None, None, "unreadable notice")]
