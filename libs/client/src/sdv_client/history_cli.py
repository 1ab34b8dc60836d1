"""`sdv history SERVICE`: a service's events as its own store (PostgreSQL) recorded them, in
commit order, with who caused each — paged over NATS (`sdv.cmd.<service>.history`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import typer
from nats.aio.client import Client as NatsClient
from rich.table import Table

from sdv_client.cli_support import JsonOption, emit_json, id_column, out, run, user
from sdv_events.bus import CommandClient
from sdv_events.history import MAX_LIMIT, HistoryEvent, HistoryQuery, history_pages
from sdv_events.registry import short_name


def _instant(value: str | None, option: str) -> datetime | None:
    """ISO 8601; without a zone it is local time."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).astimezone()
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint=option) from None


async def _collect(nc: NatsClient, service: str, query: HistoryQuery, limit: int
                   ) -> tuple[list[HistoryEvent], int, bool]:
    """Up to `limit` events; where to continue; whether more match."""
    events: list[HistoryEvent] = []
    next_after, more = query.after, False
    client = CommandClient(nc, actor=f"cli:{user()}", timeout=30.0)
    async for page in history_pages(client, service, query):
        room = limit - len(events)
        events.extend(page.events[:room])
        if len(page.events) > room:
            return events, events[-1].position, True
        next_after, more = page.next_after, page.more
        if len(events) >= limit:
            break
    return events, next_after, more


def _doc(event: HistoryEvent) -> dict[str, Any]:
    doc: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(event))  # the body as JSON
    return doc


def history(
    service: str = typer.Argument(..., help="packager | registry | orchestrator | monitor"),
    stream: str = typer.Option(None, "--stream", help="One stream, e.g. rollout-<id>."),
    category: str = typer.Option(None, "--category", help="Streams of one category, e.g. device."),
    since: str = typer.Option(None, "--since", help="Recorded at or after (ISO 8601)."),
    until: str = typer.Option(None, "--until", help="Recorded before (ISO 8601)."),
    after: int = typer.Option(0, "--after", help="Only positions after this one."),
    to: int = typer.Option(None, "--to", help="Only positions up to this one."),
    limit: int = typer.Option(100, "--limit", help="Show at most this many events."),
    as_json: bool = JsonOption,
) -> None:
    """A service's event history from its PostgreSQL store, oldest first."""
    query = HistoryQuery(stream_id=stream, category=category, after=after, to=to,
                         since=_instant(since, "--since"), until=_instant(until, "--until"),
                         limit=min(limit, MAX_LIMIT))
    events, next_after, more = run(lambda nc: _collect(nc, service, query, limit), as_json, service)
    if as_json:
        emit_json({"ok": True, "events": [_doc(e) for e in events], "next_after": next_after,
                   "more": more})
        return
    table = Table("position", "recorded", title=f"{service}: {len(events)} event(s)")
    id_column(table, "stream")
    table.add_column("v")
    table.add_column("event")
    table.add_column("actor")
    id_column(table, "correlation")
    for e in events:
        table.add_row(str(e.position), e.recorded_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
                      e.stream_id, str(e.version), short_name(e.type), e.actor or "",
                      e.correlation_id or "")
    out.print(table)
    if more:
        out.print(f"more: --after {next_after}")
