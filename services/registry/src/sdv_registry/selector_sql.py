"""A parsed label selector (plus status / online filters) as a SQL WHERE clause over the
inventory's `labels` jsonb column. Equality uses `@>` so the GIN index serves it; `!=` and
`notin` also match rows without the key, as the selector's semantics say."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sdv_events.selectors import Requirement, Selector


@dataclass(frozen=True)
class Filters:
    selector: Selector = field(default_factory=Selector)
    status: str | None = None
    online: bool | None = None


def _requirement(req: Requirement, params: list[Any]) -> str:
    params.append(req.key)
    key = f"${len(params)}"
    match req.op:
        case "exists":
            return f"labels ? {key}"
        case "!exists":
            return f"NOT (labels ? {key})"
        case "=" if len(req.values) == 1:
            params[-1] = json.dumps({req.key: req.values[0]})
            return f"labels @> ${len(params)}::jsonb"
    params.append(list(req.values))
    values = f"${len(params)}::text[]"
    if req.op in ("=", "in"):
        return f"(labels ->> {key}) = ANY({values})"
    return f"NOT coalesce((labels ->> {key}) = ANY({values}), false)"


def where_clause(filters: Filters) -> tuple[str, list[Any]]:
    params: list[Any] = []
    parts = [_requirement(r, params) for r in filters.selector.requirements]
    if filters.status is not None:
        params.append(filters.status)
        parts.append(f"status = ${len(params)}")
    if filters.online is not None:
        params.append(filters.online)
        parts.append(f"online = ${len(params)}")
    return (" AND ".join(parts) or "true"), params
