"""Rules about the text fields of a decoded command request, the same for every command.

- No text in a request may hold a NUL character: PostgreSQL cannot store or compare it and no
  name, id or subject token may contain one. (JSON carries it only as the escape `\\u0000`.)
- When a handler builds a stream id out of a request's name or id and the id is invalid, the
  request is at fault: `field_holding` finds which field sent the value, so the reply can name it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

NUL_ESCAPE = b"\\u0000"


def text_fields(request: msgspec.Struct) -> Iterator[tuple[str, str]]:
    """Every string of `request` (dict keys included) with its JSON path, depth first."""
    yield from _walk(msgspec.to_builtins(request), "$")


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield f"{path}.{key}", key
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def nul_path(body: bytes, request: msgspec.Struct) -> str | None:
    """The path of the first text field of `request` holding a NUL character, else None."""
    if NUL_ESCAPE not in body:  # the only way JSON carries a NUL
        return None
    return next((path for path, text in text_fields(request) if "\x00" in text), None)


def field_holding(request: msgspec.Struct, stream_id: str) -> str | None:
    """The path of the request field whose value made `stream_id` (`<category>-<value>`), a
    field named like an id or a name preferred; None when no field did (a bug, not input)."""
    _, sep, tail = stream_id.partition("-")
    candidates = [path for path, text in text_fields(request)
                  if text == stream_id or (sep and text == tail)]
    named = [p for p in candidates if p.rsplit(".", 1)[-1].endswith(("id", "name"))]
    return next(iter(named or candidates), None)
