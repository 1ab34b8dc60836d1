"""The bounds every command request meets before it is decoded (no servers)."""

from __future__ import annotations

import pytest

from sdv_events.bus.request_limits import check_request, nesting_depth
from sdv_events.errors import DecodeError


@pytest.mark.parametrize(("payload", "depth"), [
    (b"{}", 1),
    (b'{"a": [1, {"b": []}]}', 4),
    (b'{"a": "[[[[{{{{"}', 1),  # brackets in a string do not nest
    (b'{"a": "\\"[[[["}', 1),  # nor after an escaped quote
    (b'["]", ["x"]]', 2),
    (b"1", 0),
])
def test_nesting_depth_counts_arrays_and_objects_outside_strings(payload: bytes, depth: int) -> None:
    assert nesting_depth(payload) == depth


def test_a_request_at_the_depth_limit_passes_and_one_level_more_is_too_deep() -> None:
    check_request(b"[" * 64 + b"]" * 64, max_depth=64)
    with pytest.raises(DecodeError) as err:
        check_request(b"[" * 65 + b"]" * 65, max_depth=64)
    assert err.value.reason == "too_deep"
    assert "65" in err.value.detail


def test_a_request_at_the_size_limit_passes_and_one_byte_more_is_too_large() -> None:
    check_request(b" " * 100, max_bytes=100)
    with pytest.raises(DecodeError) as err:
        check_request(b" " * 101, max_bytes=100)
    assert err.value.reason == "too_large"


def test_a_megabyte_of_open_brackets_is_measured_without_recursion() -> None:
    assert nesting_depth(b"[" * 1_000_000) == 1_000_000
