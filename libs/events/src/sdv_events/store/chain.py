"""Walking a store's hash chains (003_hash_chain.sql): each stream's events are re-hashed in
version order and compared with the recorded chain; the first event per stream that was
altered, removed, moved or slipped in without its link is named. Pure functions over rows, and
`verify_chain` reading them in pages (a whole store never sits in memory)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
import msgspec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PAGE_ROWS = 5000
ProblemKind = Literal["altered", "removed", "moved", "unchained"]


class ChainProblem(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str
    version: int
    kind: ProblemKind
    detail: str
    event_id: uuid.UUID | None = None
    position: int | None = None


class ChainReport(msgspec.Struct, frozen=True, kw_only=True):
    schema: str
    streams: int
    events: int
    problems: list[ChainProblem] = []

    @property
    def intact(self) -> bool:
        return not self.problems


VERIFY_COMMAND = "verify"


class VerifyChain(msgspec.Struct, frozen=True):
    """`sdv.cmd.<service>.verify`: walk every stream's chain of the service's store."""


@dataclass(frozen=True)
class Row:
    """One (stream, version) of `events` FULL JOIN `event_hashes`: either side may be missing."""

    stream_id: str
    version: int
    event_id: uuid.UUID | None  # the event row's (None: no event row)
    position: int | None
    type: str | None
    schema_version: int | None
    occurred_at: datetime | None
    recorded_at: datetime | None
    data: bytes | None
    metadata: bytes | None
    chained_id: uuid.UUID | None  # what the chain recorded (None: no link)
    chained_position: int | None
    hash: bytes | None


def _us(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def genesis(stream_id: str) -> bytes:
    return hashlib.sha256(f"sdv-chain\n{stream_id}".encode()).digest()


def link(prev: bytes, row: Row) -> bytes:
    assert row.data is not None
    assert row.metadata is not None
    assert row.occurred_at is not None
    assert row.recorded_at is not None
    header = (f"{row.stream_id}\n{row.version}\n{row.event_id}\n{row.type}\n{row.schema_version}\n"
              f"{_us(row.occurred_at)}\n{_us(row.recorded_at)}\n{len(row.data)}\n{len(row.metadata)}\n")
    return hashlib.sha256(prev + header.encode() + row.data + row.metadata).digest()


def _at(row: Row, kind: ProblemKind, detail: str) -> ChainProblem:
    return ChainProblem(stream_id=row.stream_id, version=row.version, kind=kind, detail=detail,
                        event_id=row.event_id, position=row.position)


def check_stream(rows: list[Row]) -> ChainProblem | None:
    """One stream's rows (events with their links) in version order → its first problem."""
    prev = genesis(rows[0].stream_id) if rows else b""
    expected = 1
    for row in rows:
        if row.version != expected:
            return ChainProblem(stream_id=row.stream_id, version=expected, kind="removed",
                                detail=f"version {expected} is missing from the events "
                                       f"(the next one stored is {row.version})")
        expected += 1
        if row.hash is None:
            return _at(row, "unchained", "stored without its link in the chain (inserted past "
                                         "append_events, or not chained yet)")
        if (row.chained_id, row.chained_position) != (row.event_id, row.position):
            return _at(row, "moved", f"the chain recorded event {row.chained_id} at position "
                                     f"{row.chained_position} here")
        computed = link(prev, row)
        if computed != row.hash:
            return _at(row, "altered", "its content no longer matches its link")
        prev = computed
    return None


async def _rows(pool: asyncpg.Pool, schema: str) -> AsyncIterator[Row]:
    """Every event with its link, by (stream, version): pages on the events' unique index."""
    after: tuple[str, int] = ("", 0)
    while True:
        records = await pool.fetch(f"""
            SELECT e.stream_id, e.version, e.event_id, e.global_position AS position, e.type,
                   e.schema_version, e.occurred_at, e.recorded_at, e.data, e.metadata,
                   h.event_id AS chained_id, h.global_position AS chained_position, h.hash
            FROM {schema}.events e LEFT JOIN {schema}.event_hashes h
                ON h.stream_id = e.stream_id AND h.version = e.version
            WHERE (e.stream_id, e.version) > ($1, $2)
            ORDER BY e.stream_id, e.version LIMIT {PAGE_ROWS}""", *after)
        for r in records:
            yield Row(**dict(r))
        if len(records) < PAGE_ROWS:
            return
        after = (records[-1]["stream_id"], records[-1]["version"])


async def _orphans(pool: asyncpg.Pool, schema: str) -> list[ChainProblem]:
    """Links past a stream's last stored event (its last events, or all of them, deleted)."""
    records = await pool.fetch(f"""
        SELECT DISTINCT ON (h.stream_id) h.stream_id, h.version, h.event_id, h.global_position
        FROM {schema}.event_hashes h
        WHERE NOT EXISTS (SELECT 1 FROM {schema}.events e
                          WHERE e.stream_id = h.stream_id AND e.version = h.version)
        ORDER BY h.stream_id, h.version""")
    return [ChainProblem(stream_id=r["stream_id"], version=r["version"], event_id=r["event_id"],
                         position=r["global_position"], kind="removed",
                         detail="the chain links an event that is no longer stored") for r in records]


async def verify_chain(pool: asyncpg.Pool, schema: str) -> ChainReport:
    first: dict[str, ChainProblem] = {}
    streams = events = 0
    current: list[Row] = []

    def close() -> None:
        nonlocal streams
        if current:
            streams += 1
            if (problem := check_stream(current)) is not None:
                first[problem.stream_id] = problem
            current.clear()

    async for row in _rows(pool, schema):
        events += 1
        if current and row.stream_id != current[0].stream_id:
            close()
        current.append(row)
    close()
    for orphan in await _orphans(pool, schema):
        known = first.get(orphan.stream_id)
        if known is None or orphan.version < known.version:
            first[orphan.stream_id] = orphan
    return ChainReport(schema=schema, streams=streams, events=events,
                       problems=sorted(first.values(), key=lambda p: (p.stream_id, p.version)))
