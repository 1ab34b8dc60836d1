"""The audit trail's reads: filters pushed into SQL over `audit_events`, oldest first, paged by
a cursor (time, event id) that stays valid while new events arrive."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

from sdv_events.bus.rpc import InvalidRequest
from sdv_events.schemas.monitor import AuditEvent, AuditPage, AuditQuery
from sdv_monitor.where import Where


def cursor_of(at: datetime, event_id: uuid.UUID) -> str:
    return f"{at.isoformat()}|{event_id}"


def parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, event_id = cursor.split("|")
        return datetime.fromisoformat(at), uuid.UUID(event_id)
    except ValueError:
        raise InvalidRequest(f"not a cursor this audit gave out: {cursor[:100]!r}",
                             details={"reason": "bad_cursor", "field": "after"}) from None


def _where(query: AuditQuery) -> Where:
    where = Where()
    for column, value in (("rollout_id", query.rollout), ("device_id", query.device),
                          ("package", query.package), ("stream_id", query.stream),
                          ("correlation_id", query.correlation), ("actor", query.actor)):
        where.equal(column, value)
    where.add("(type = $? OR split_part(type, '.', 2) = $?)", query.type)
    where.add("occurred_at >= $?", query.since).add("occurred_at < $?", query.until)
    if query.since is not None and query.until is not None and query.until < query.since:
        raise InvalidRequest("time range inverted: until is before since",
                             details={"reason": "inverted_range", "field": "until"})
    if query.after is not None:
        at, event_id = parse_cursor(query.after)
        where.params.extend([at, event_id])
        n = len(where.params)
        where.term(f"(occurred_at, event_id) > (${n - 1}, ${n})")
    return where


async def audit(pool: asyncpg.Pool, schema: str, query: AuditQuery) -> AuditPage:
    where = _where(query)
    clause, params = where.clause, where.params
    rows = await pool.fetch(
        f"SELECT event_id, occurred_at AS at, service, stream_id, version, type, actor, correlation_id, "
        f"causation_id, device_id, rollout_id, package, data::text AS data FROM {schema}.audit_events "
        f"WHERE {clause} ORDER BY occurred_at, event_id LIMIT ${len(params) + 1}",
        *params, query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    items = [AuditEvent(**{**dict(r), "data": msgspec.json.decode(r["data"])}) for r in rows]
    last = items[-1] if items else None
    return AuditPage(items=items, next_after=cursor_of(last.at, last.event_id) if more and last else None)
