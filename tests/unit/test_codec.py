"""Envelope codec on untrusted input: round trips, typed decode errors, upcasting, fuzzing; ids."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdv_events.codec import MAX_MESSAGE_BYTES, decode_envelope, encode
from sdv_events.envelope import Envelope, TraceContext
from sdv_events.errors import DecodeError, DecodeReason, UnknownEventType
from sdv_events.ids import InvalidStreamId, split_stream_id, stream_id, uuid7
from sdv_events.registry import EventRegistry, event, upcaster

REG = EventRegistry()


@event("codectest.DeviceSeen", registry=REG)
class DeviceSeen(msgspec.Struct, frozen=True):
    device_id: str
    rssi: int
    tags: list[str] = []


class ReadingV1(msgspec.Struct, frozen=True):
    """How `codectest.Reading.v1` was written. No longer registered: only its upcaster is."""

    value: int


@event("codectest.Reading", version=2, registry=REG)
class ReadingV2(msgspec.Struct, frozen=True):
    value: int
    unit: str


@upcaster("codectest.Reading.v1", "codectest.Reading.v2", registry=REG)
def _reading_v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    # Deliberately naive over untrusted input (fails on non-numeric values): the codec must contain it.
    return {"value": body["value"] * 10, "unit": "dC"}


def make_envelope(data: msgspec.Struct, type_: str = "codectest.DeviceSeen.v1", **fields: Any) -> Envelope:
    values: dict[str, Any] = {
        "event_id": uuid7(),
        "stream_id": "device-car-0042",
        "version": 3,
        "type": type_,
        "schema_version": int(type_.rsplit(".v", 1)[1]),
        "occurred_at": datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "data": data,
    }
    values.update(fields)
    return Envelope(**values)


def valid_dict() -> dict[str, Any]:
    return json.loads(encode(make_envelope(DeviceSeen("car-0042", -61, ["eu"]))))


def decode_error(
    payload: bytes, *, registry: EventRegistry = REG, max_bytes: int = MAX_MESSAGE_BYTES
) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_envelope(payload, registry=registry, max_bytes=max_bytes)
    return info.value


# --- round trip -------------------------------------------------------------------------------


def test_round_trip_preserves_every_field() -> None:
    original = make_envelope(
        DeviceSeen("car-0042", -61, ["eu", "beta"]),
        correlation_id="rollout-7",
        causation_id="cmd-1",
        actor="alice",
        trace=TraceContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "vendor=x"),
        position=99,
    )

    decoded = decode_envelope(encode(original), registry=REG)

    assert decoded == original
    assert isinstance(decoded.data, DeviceSeen)
    assert decoded.metadata.actor == "alice"


def test_round_trip_without_optional_fields_uses_defaults() -> None:
    payload = valid_dict()
    for optional in ("correlation_id", "causation_id", "actor", "trace", "position"):
        payload.pop(optional)

    decoded = decode_envelope(json.dumps(payload).encode(), registry=REG)

    assert decoded.trace == TraceContext()
    assert decoded.position == 0
    assert decoded.actor is None


def test_bytearray_and_memoryview_are_accepted() -> None:
    raw = encode(make_envelope(DeviceSeen("car-1", 0)))
    assert decode_envelope(bytearray(raw), registry=REG).data == DeviceSeen("car-1", 0)
    assert decode_envelope(memoryview(raw), registry=REG).data == DeviceSeen("car-1", 0)


# --- each DecodeError reason -------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"{not json", b"", b"\xff\xfe\x00", b'{"unexpected": 1', b"nul"])
def test_malformed_json(payload: bytes) -> None:
    err = decode_error(payload)
    assert err.reason == "malformed"
    assert err.path == "$"


def test_non_bytes_input_is_malformed() -> None:
    with pytest.raises(DecodeError) as info:
        decode_envelope("{}", registry=REG)  # type: ignore[arg-type]
    assert info.value.reason == "malformed"


def test_unknown_type() -> None:
    payload = valid_dict()
    payload["type"] = "codectest.NeverRegistered.v1"

    err = decode_error(json.dumps(payload).encode())

    assert isinstance(err, UnknownEventType)
    assert err.reason == "unknown_type"
    assert err.path == "$.type"
    assert err.type_name == "codectest.NeverRegistered.v1"


def test_type_registered_in_another_registry_is_unknown() -> None:
    """A private registry is the whole vocabulary of its decoder; no leaks from the default one."""
    err = decode_error(encode(make_envelope(DeviceSeen("a", 1))), registry=EventRegistry())
    assert err.reason == "unknown_type"


def test_missing_envelope_field() -> None:
    payload = valid_dict()
    del payload["stream_id"]

    err = decode_error(json.dumps(payload).encode())

    assert err.reason == "missing_field"
    assert err.path == "$"
    assert "stream_id" in str(err)


def test_missing_body_field_points_into_data() -> None:
    payload = valid_dict()
    del payload["data"]["rssi"]

    err = decode_error(json.dumps(payload).encode())

    assert err.reason == "missing_field"
    assert err.path == "$.data"
    assert "rssi" in str(err)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.__setitem__("version", "three"), "$.version"),
        (lambda d: d.__setitem__("type", None), "$.type"),
        (lambda d: d["data"].__setitem__("rssi", "loud"), "$.data.rssi"),
        (lambda d: d["data"].__setitem__("tags", ["ok", 7]), "$.data.tags[1]"),
        (lambda d: d.__setitem__("data", [1, 2]), "$.data"),
        (lambda d: d.__setitem__("trace", {"traceparent": 5}), "$.trace.traceparent"),
    ],
)
def test_wrong_type_names_the_path(mutate: Any, path: str) -> None:
    payload = valid_dict()
    mutate(payload)

    err = decode_error(json.dumps(payload).encode())

    assert err.reason == "wrong_type"
    assert err.path == path


def test_top_level_array_is_wrong_type() -> None:
    err = decode_error(b"[1, 2, 3]")
    assert err.reason == "wrong_type"
    assert err.path == "$"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", "not-a-uuid"),
        ("occurred_at", "yesterday at noon"),
        ("occurred_at", "2025-13-45T00:00:00Z"),
    ],
)
def test_invalid_value(field: str, value: str) -> None:
    payload = valid_dict()
    payload[field] = value

    err = decode_error(json.dumps(payload).encode())

    assert err.reason == "invalid_value"
    assert err.path == f"$.{field}"


def test_too_large_is_refused_before_parsing() -> None:
    err = decode_error(b"{" * (MAX_MESSAGE_BYTES + 1))
    assert err.reason == "too_large"
    assert err.path == "$"


def test_max_bytes_is_configurable() -> None:
    raw = encode(make_envelope(DeviceSeen("car-1", 0)))
    assert decode_envelope(raw, registry=REG, max_bytes=len(raw)).data == DeviceSeen("car-1", 0)
    assert decode_error(raw, max_bytes=len(raw) - 1).reason == "too_large"


@pytest.mark.parametrize("where", ["envelope", "body"])
def test_deep_nesting_is_a_decode_error_not_a_recursion_error(where: str) -> None:
    """A small message (10 KB) nested thousands of levels deep in an ignored field."""
    deep = "[" * 5000 + "]" * 5000
    payload = valid_dict()
    payload["extra"] = "@DEEP@"
    if where == "body":
        payload["data"]["extra"] = "@DEEP@"
    raw = json.dumps(payload).replace('"@DEEP@"', deep).encode()

    err = decode_error(raw)

    assert err.reason == "malformed"


def test_deep_nesting_in_an_upcast_body_is_a_decode_error() -> None:
    payload = json.loads(encode(make_envelope(ReadingV1(1), "codectest.Reading.v1")))
    payload["data"]["extra"] = "@DEEP@"
    raw = json.dumps(payload).replace('"@DEEP@"', "[" * 5000 + "]" * 5000).encode()

    assert decode_error(raw).reason == "malformed"


# --- upcasting ---------------------------------------------------------------------------------


def test_v1_payload_decodes_into_v2_through_the_upcaster() -> None:
    stored_v1 = encode(make_envelope(ReadingV1(21), "codectest.Reading.v1"))

    decoded = decode_envelope(stored_v1, registry=REG)

    assert decoded.data == ReadingV2(value=210, unit="dC")


def test_current_version_is_decoded_without_upcasting() -> None:
    decoded = decode_envelope(encode(make_envelope(ReadingV2(5, "K"), "codectest.Reading.v2")), registry=REG)
    assert decoded.data == ReadingV2(5, "K")


def test_upcaster_chain_of_several_steps() -> None:
    reg = EventRegistry()

    @event("chain.Temp", version=3, registry=reg)
    class TempV3(msgspec.Struct, frozen=True):
        celsius: float
        sensor: str

    @upcaster("chain.Temp.v1", "chain.Temp.v2", registry=reg)
    def v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
        return {"celsius": (body["fahrenheit"] - 32) * 5 / 9}

    @upcaster("chain.Temp.v2", "chain.Temp.v3", registry=reg)
    def v2_to_v3(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "sensor": "legacy"}

    payload = valid_dict()
    payload.update(type="chain.Temp.v1", schema_version=1, data={"fahrenheit": 212})

    decoded = decode_envelope(json.dumps(payload).encode(), registry=reg)

    assert decoded.data == TempV3(celsius=100.0, sensor="legacy")


def test_upcaster_cycle_is_an_unknown_type_not_a_hang() -> None:
    reg = EventRegistry()
    reg.add_upcaster("loop.A.v1", "loop.A.v2", lambda b: b)
    reg.add_upcaster("loop.A.v2", "loop.A.v1", lambda b: b)
    payload = valid_dict()
    payload.update(type="loop.A.v1", data={})

    assert decode_error(json.dumps(payload).encode(), registry=reg).reason == "unknown_type"


def test_upcaster_failing_on_hostile_body_is_contained() -> None:
    payload = json.loads(encode(make_envelope(ReadingV1(1), "codectest.Reading.v1")))
    payload["data"] = {"value": {"not": "a number"}}

    err = decode_error(json.dumps(payload).encode())

    assert err.path == "$.data"


def test_upcaster_output_is_validated_against_the_new_version() -> None:
    reg = EventRegistry()

    @event("bad.Up", version=2, registry=reg)
    class UpV2(msgspec.Struct, frozen=True):
        n: int

    reg.add_upcaster("bad.Up.v1", "bad.Up.v2", lambda body: {"n": "not an int"})
    payload = valid_dict()
    payload.update(type="bad.Up.v1", data={})

    err = decode_error(json.dumps(payload).encode(), registry=reg)

    assert err.reason == "wrong_type"
    assert err.path == "$.data.n"


def test_registering_a_second_class_under_a_taken_name_fails() -> None:
    reg = EventRegistry()

    @event("dup.Thing", registry=reg)
    class First(msgspec.Struct):
        a: int

    with pytest.raises(ValueError, match=r"dup\.Thing\.v1"):

        @event("dup.Thing", registry=reg)
        class Second(msgspec.Struct):
            a: int


# --- fuzzing: only Envelope or DecodeError, ever ------------------------------------------------

REASONS = set(get_args(DecodeReason))
KNOWN_TYPES = ["codectest.DeviceSeen.v1", "codectest.Reading.v1", "codectest.Reading.v2"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


def check_decode(payload: bytes) -> None:
    """Any other exception type propagates and fails the test."""
    try:
        decoded: Envelope | DecodeError = decode_envelope(payload, registry=REG)
    except DecodeError as err:
        decoded = err
    if isinstance(decoded, DecodeError):
        assert type(decoded) in (DecodeError, UnknownEventType)
        assert decoded.reason in REASONS
        assert decoded.path.startswith("$")
    else:
        assert isinstance(decoded, Envelope)
        assert isinstance(decoded.data, DeviceSeen | ReadingV2)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(payload: bytes) -> None:
    check_decode(payload)


@FUZZ
@given(json_values)
def test_fuzz_random_json(value: Any) -> None:
    check_decode(json.dumps(value).encode())


@FUZZ
@given(
    field=st.sampled_from([*valid_dict().keys(), "data.device_id", "data.rssi", "data.tags", "unexpected"]),
    action=st.sampled_from(["replace", "delete"]),
    value=json_values,
)
def test_fuzz_valid_envelope_with_one_field_mutated(field: str, action: str, value: Any) -> None:
    payload = valid_dict()
    target = payload
    if field.startswith("data."):
        target, field = payload["data"], field.removeprefix("data.")
    if action == "delete":
        target.pop(field, None)
    else:
        target[field] = value
    check_decode(json.dumps(payload).encode())


@FUZZ
@given(type_=st.sampled_from([*KNOWN_TYPES, "codectest.Nope.v1", ""]), data=json_values)
def test_fuzz_valid_envelope_with_random_body(type_: str, data: Any) -> None:
    payload = valid_dict()
    payload["type"] = type_
    payload["data"] = data
    check_decode(json.dumps(payload).encode())


@FUZZ
@given(data=st.data())
def test_fuzz_valid_body_with_random_bytes_spliced_in(data: st.DataObject) -> None:
    raw = encode(make_envelope(DeviceSeen("car-1", 3, ["x"])))
    at = data.draw(st.integers(0, len(raw)))
    cut = data.draw(st.integers(0, 8))
    noise = data.draw(st.binary(max_size=8))
    check_decode(raw[:at] + noise + raw[at + cut :])


# --- ids ---------------------------------------------------------------------------------------


def test_uuid7_is_version_7_rfc_variant() -> None:
    value = uuid7()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_uuid7_carries_the_current_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_uuid7_orders_by_time() -> None:
    start = 1_700_000_000_000
    ids = [uuid7(start + ms) for ms in range(0, 500, 3)]
    shuffled = sorted(ids, key=lambda u: u.int % 7919)
    assert sorted(shuffled) == ids
    assert sorted(str(u) for u in shuffled) == [str(u) for u in ids]  # text order too (DB, logs)


def test_uuid7_is_unique_within_one_millisecond() -> None:
    assert len({uuid7(1_700_000_000_000) for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("sid", "expected"),
    [
        ("rollout-0193ab", ("rollout", "0193ab")),
        ("device-car-0042", ("device", "car-0042")),
        ("pkg_v2-A_b", ("pkg_v2", "A_b")),
    ],
)
def test_split_stream_id(sid: str, expected: tuple[str, str]) -> None:
    assert split_stream_id(sid) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "rollout",
        "rollout-",
        "-42",
        "Rollout-42",
        "1rollout-42",
        "roll out-42",
        "rollout-4.2",  # a dot would split the NATS subject token
        "rollout-a*",
        "rollout->",
        "rollout-a b",
        "x" * 33 + "-1",
        "rollout-" + "a" * 201,
        "rollout-42\n",
    ],
)
def test_split_stream_id_rejects_bad_ids(bad: str) -> None:
    with pytest.raises(InvalidStreamId, match="invalid stream id"):
        split_stream_id(bad)


def test_stream_id_builder_validates() -> None:
    assert stream_id("device", "car-1") == "device-car-1"
    with pytest.raises(InvalidStreamId):
        stream_id("device", "car.1")
    with pytest.raises(ValueError, match="invalid stream id"):  # a ValueError for generic callers
        stream_id("Device", "1")
