"""Identifiers: UUIDv7 (time-ordered, RFC 9562) for events and commands, stream ids by category."""

from __future__ import annotations

import functools
import os
import re
import time
import uuid

_STREAM_RE = re.compile(r"^([a-z][a-z0-9_]{0,31})-([A-Za-z0-9_\-]{1,200})$")


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A version-7 UUID: 48-bit unix milliseconds, then 74 random bits."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


class InvalidStreamId(ValueError):
    """A stream id is `<category>-<id>`: category lowercase, id safe as one NATS subject token."""

    def __init__(self, message: str, stream_id: str = "") -> None:
        super().__init__(message)
        self.stream_id = stream_id


@functools.lru_cache(maxsize=4096)  # a consumer asks it of the same few ids, event after event
def split_stream_id(stream_id: str) -> tuple[str, str]:
    """`rollout-0193ab…` → (`rollout`, `0193ab…`). The id part may itself contain hyphens."""
    match = _STREAM_RE.fullmatch(stream_id)
    if match is None:
        raise InvalidStreamId(
            f"invalid stream id {stream_id!r}: expected '<category>-<id>' with a lowercase "
            "category and an id of letters, digits, '_' or '-'", stream_id
        )
    return match.group(1), match.group(2)


def stream_id(category: str, entity_id: str) -> str:
    candidate = f"{category}-{entity_id}"
    split_stream_id(candidate)
    return candidate
