"""Bounds every command request meets before it is decoded: its size and its nesting depth.

A decoder recurses once per nesting level; a request of a few hundred kilobytes of `[` could
exhaust the stack (or Python's recursion limit) inside the decoder. So the depth is measured
here, over the bytes, before any decoder sees them, in time linear in the request's size.
Failures are `DecodeError`s, which the command layer answers as `invalid_request`.
"""

from __future__ import annotations

import re
from itertools import accumulate

from sdv_events.errors import DecodeError

# No command request comes near this (uploads travel through the object store, not requests);
# it stays below NATS's default max payload (1 MiB) so that an oversized request reaches the
# service and is answered rather than refused by the client library.
MAX_REQUEST_BYTES = 256 * 1024
# Deeper than any request schema nests (labels, selectors and waves are two or three levels).
MAX_REQUEST_DEPTH = 64

# A JSON string, escapes included; brackets inside strings do not nest.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _opener in b"[{":
    _STEP[_opener] = 1
for _closer in b"]}":
    _STEP[_closer] = -1


def nesting_depth(payload: bytes) -> int:
    """The deepest nesting of arrays and objects in `payload` (JSON; malformed input gives a
    number too — the decoder refuses it afterwards)."""
    brackets = _STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_request(
    payload: bytes, *, max_bytes: int = MAX_REQUEST_BYTES, max_depth: int = MAX_REQUEST_DEPTH
) -> None:
    """Raise `DecodeError` ("too_large" / "too_deep") when `payload` is over either bound."""
    if len(payload) > max_bytes:
        raise DecodeError("too_large", f"the request is {len(payload)} bytes, over this command's "
                                       f"{max_bytes}-byte limit")
    # Fast path: with no more openers than the limit, the depth cannot exceed it.
    if payload.count(b"[") + payload.count(b"{") <= max_depth:
        return
    depth = nesting_depth(payload)
    if depth > max_depth:
        raise DecodeError("too_deep", f"the request nests {depth} levels deep, over the limit of "
                                      f"{max_depth}")
