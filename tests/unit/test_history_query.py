"""History queries and pages without servers: which filter a query means, and the per-event
size bound a page's byte budget relies on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from sdv_events.bus import InvalidRequest
from sdv_events.codec import encode, encode_metadata
from sdv_events.envelope import Metadata, TraceContext
from sdv_events.history import (
    EVENT_OVERHEAD_BYTES,
    HistoryPage,
    HistoryQuery,
    check_query,
    history_event,
)
from sdv_events.store.reads import EventFilter, RecordedEvent
from sdv_events.stream_owners import owner_of

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FAR = timezone(timedelta(hours=-9, minutes=-30))


def test_a_query_becomes_the_store_filter_it_names() -> None:
    query = HistoryQuery(stream_id="rollout-42", from_version=7, after=3, to=90, since=T0,
                         until=T0 + timedelta(hours=1), limit=50)
    assert check_query(query) == EventFilter(to=90, stream_id="rollout-42", from_version=7,
                                              since=T0, until=T0 + timedelta(hours=1))
    assert check_query(HistoryQuery(category="device")) == EventFilter(category="device")


def test_empty_ranges_are_valid_and_inverted_ones_are_not() -> None:
    check_query(HistoryQuery(after=5, to=5))
    check_query(HistoryQuery(since=T0, until=T0))
    with pytest.raises(InvalidRequest) as caught:
        check_query(HistoryQuery(since=T0, until=T0 - timedelta(seconds=1)))
    assert caught.value.details == {"reason": "inverted_range", "field": "until"}


@pytest.mark.parametrize("stream_id", ["rollout", "Rollout-1", "rollout-a.b", "rollout-" + "x" * 201])
def test_a_bad_stream_id_is_named_as_such(stream_id: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_query(HistoryQuery(stream_id=stream_id))
    assert caught.value.details["reason"] == "bad_stream_id"


def test_a_history_event_never_outgrows_its_counted_size() -> None:
    """The page budget counts body + metadata + stream id + type + EVENT_OVERHEAD_BYTES per
    event: the JSON of the largest fixed fields must stay within it."""
    meta = Metadata(correlation_id="c" * 36, causation_id="k" * 36, actor="operator:" + "a" * 40,
                    trace=TraceContext("00-" + "f" * 32 + "-" + "e" * 16 + "-01", "vendor=" + "v" * 40))
    data = encode({"text": "x" * 100})
    for metadata in (encode_metadata(meta), encode_metadata(Metadata())):
        record = RecordedEvent(
            position=2**62, stream_id="category_name_of_32_characters_-" + "i" * 200,
            version=2**31 - 1, event_id=uuid.uuid4(), type="service.SomeLongEventTypeName.v32767",
            schema_version=32767, data=data, metadata=metadata,
            occurred_at=datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=FAR),
            recorded_at=datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=FAR),
        )
        counted = (len(record.data) + len(record.metadata) + len(record.stream_id)
                   + len(record.type) + EVENT_OVERHEAD_BYTES)
        assert len(encode(history_event(record))) <= counted


def test_a_page_round_trips_with_the_body_undecoded() -> None:
    record = RecordedEvent(position=1, stream_id="device-d1", version=1, event_id=uuid.uuid4(),
                           type="registry.DeviceAccepted.v1", schema_version=1,
                           data=b'{"by":"op"}', metadata=encode_metadata(Metadata(actor="op")),
                           occurred_at=T0, recorded_at=T0)
    page = HistoryPage(events=[history_event(record)], next_after=1, more=False)
    decoded = msgspec.json.decode(encode(page), type=HistoryPage)
    assert bytes(decoded.events[0].data) == b'{"by":"op"}'
    assert decoded.events[0].actor == "op"


def test_each_stream_category_names_the_service_that_stores_it() -> None:
    assert owner_of("package-door-watch") == "packager"
    assert owner_of("device-orin-001") == "registry"
    assert owner_of("rollout-0193ab") == "orchestrator"
    assert owner_of("policy-nightly") == "orchestrator"
    assert owner_of("agent-orin-001") is None  # facts live in the device's own outbox
