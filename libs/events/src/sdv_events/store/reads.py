"""Reads of the event log beyond one stream: which events (`EventFilter`), and events as
recorded (`RecordedEvent`, body and metadata still encoded) for pages bounded in bytes.

Filters become SQL conditions holding only the filters that are set, so each query keeps the
index plan of its own shape (a catch-all `$n IS NULL OR …` would make PostgreSQL's generic plan
scan every row for a stream read)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from sdv_events.ids import split_stream_id

RECORD_COLUMNS = (
    "global_position, stream_id, version, event_id, type, schema_version, data, metadata, "
    "occurred_at, recorded_at"
)


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the log as stored: `data` and `metadata` are their JSON bytes. `recorded_at`
    is the start of the appending transaction (PostgreSQL's `now()`), so it is not strictly
    ordered by position."""

    position: int
    stream_id: str
    version: int
    event_id: uuid.UUID
    type: str
    schema_version: int
    data: bytes
    metadata: bytes
    occurred_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class EventFilter:
    """`to` is an inclusive position; `since` inclusive and `until` exclusive bounds on
    `recorded_at`; `from_version` applies with `stream_id`; `category` selects `<category>-*`."""

    to: int | None = None
    stream_id: str | None = None
    from_version: int = 1
    category: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.stream_id is not None:
            split_stream_id(self.stream_id)
        if self.category is not None:
            split_stream_id(f"{self.category}-x")

    def conditions(self, params: list[Any]) -> str:
        """` AND …` for every filter set, appending its values to `params` (numbered after
        the ones already there)."""
        parts: list[str] = []

        def bind(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if self.to is not None:
            parts.append(f"global_position <= {bind(self.to)}")
        if self.stream_id is not None:
            parts.append(f"stream_id = {bind(self.stream_id)}")
            if self.from_version > 1:
                parts.append(f"version >= {bind(self.from_version)}")
        if self.category is not None:
            # Not LIKE: '_' is a LIKE wildcard and categories may contain it.
            parts.append(f"starts_with(stream_id, {bind(self.category + '-')})")
        if self.since is not None:
            parts.append(f"recorded_at >= {bind(self.since)}")
        if self.until is not None:
            parts.append(f"recorded_at < {bind(self.until)}")
        return "".join(f" AND {part}" for part in parts)


def page_sql(schema: str, where: EventFilter, after: int, limit: int, max_bytes: int,
             overhead: int) -> tuple[str, list[Any]]:
    """Up to `limit` events after `after`, in position order, cut where their sizes (body +
    metadata + stream id + type + `overhead` each) would pass `max_bytes` — but at least one.
    Each row also carries `fetched`: how many matched up to `limit + 1`, so more rows exist when
    it exceeds the rows returned. Sizes come from the TOAST headers: rows past the cut are
    never read in full."""
    params: list[Any] = [after, limit + 1, limit, max_bytes, overhead]
    conditions = where.conditions(params)
    sql = f"""
SELECT {RECORD_COLUMNS}, fetched FROM (
    SELECT *, row_number() OVER w AS n, count(*) OVER () AS fetched,
           sum(octet_length(data) + octet_length(metadata) + octet_length(stream_id)
               + octet_length(type) + $5) OVER w AS running
    FROM (SELECT {RECORD_COLUMNS} FROM {schema}.events
          WHERE global_position > $1{conditions}
          ORDER BY global_position LIMIT $2) AS candidates
    WINDOW w AS (ORDER BY global_position)
) AS sized
WHERE n <= $3 AND (n = 1 OR running <= $4)
ORDER BY global_position"""
    return sql, params
