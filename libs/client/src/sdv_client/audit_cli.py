"""`sdv audit`: every event of every service and every device fact, in order, with who caused
it — from the monitor's audit trail (`sdv.cmd.monitor.audit`), filtered and paged; a table,
`--json`, or `--jsonl` (one event per line, for export)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import msgspec
import typer
from nats.aio.client import Client as NatsClient
from rich.table import Table

from sdv_client.cli_support import JsonOption, WideOption, emit_json, id_column, out, run, user, widen
from sdv_client.health import SERVICES
from sdv_client.history_cli import _instant
from sdv_events.bus import CommandClient
from sdv_events.registry import short_name
from sdv_events.schemas.monitor import AuditEvent, AuditPage, AuditQuery
from sdv_events.store.chain import VERIFY_COMMAND, ChainReport, VerifyChain

app = typer.Typer(help="The audit trail: who did what, to which vehicle, when.",
                  invoke_without_command=True)


async def collect(nc: NatsClient, query: AuditQuery, limit: int) -> tuple[list[AuditEvent], str | None]:
    client = CommandClient(nc, actor=f"cli:{user()}", timeout=30.0)
    events: list[AuditEvent] = []
    while True:
        page = await client.call("monitor", "audit", query, AuditPage)
        events.extend(page.items)
        if page.next_after is None or len(events) >= limit:
            return events[:limit], page.next_after if len(events) >= limit else None
        query = msgspec.structs.replace(query, after=page.next_after,
                                        limit=min(1000, limit - len(events)))


@app.callback()
def audit(
    ctx: typer.Context,
    rollout: str = typer.Option(None, "--rollout",
                                help="Events of one rollout (and devices' facts about it)."),
    device: str = typer.Option(None, "--device", help="Events about one device, its facts included."),
    package: str = typer.Option(None, "--package", help="Events about one app (package name)."),
    stream: str = typer.Option(None, "--stream", help="One stream, e.g. rollout-<id> or agent-<device>."),
    correlation: str = typer.Option(None, "--correlation", help="One correlation id."),
    actor: str = typer.Option(None, "--actor", help="Who caused it, e.g. operator:alice or device:car-1."),
    type_: str = typer.Option(None, "--type", help="Event type, e.g. DeviceFailed."),
    since: str = typer.Option(None, "--since", help="At or after (ISO 8601)."),
    until: str = typer.Option(None, "--until", help="Before (ISO 8601)."),
    after: str = typer.Option(None, "--after", help="Continue after this cursor (from --json)."),
    limit: int = typer.Option(200, "--limit", min=1, max=1_000_000, help="At most this many events."),
    as_json: bool = JsonOption,
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON event per line (export)."),
    wide: bool = WideOption,
) -> None:
    """Every event of every service and every device fact, oldest first."""
    if ctx.invoked_subcommand is not None:
        return
    query = AuditQuery(rollout=rollout, device=device, package=package, stream=stream,
                       correlation=correlation, actor=actor, type=type_,
                       since=_instant(since, "--since"), until=_instant(until, "--until"),
                       after=after, limit=min(limit, 1000))
    events, next_after = run(lambda nc: collect(nc, query, limit), as_json or jsonl, "monitor")
    docs: list[dict[str, Any]] = msgspec.to_builtins(events)
    if jsonl:
        for doc in docs:
            sys.stdout.write(json.dumps(doc) + "\n")
        return
    if as_json:
        emit_json({"ok": True, "events": docs, "next_after": next_after})
        return
    whole = widen(wide)
    table = Table("at", "service", "actor", "event", title=f"{len(events)} event(s)")
    for column in ("stream", "device", "correlation", "caused by"):
        id_column(table, column)
    for e in events:
        # Correlation and causation ids are shortened to what tells them apart on a screen;
        # piped or --wide, they are whole (a script greps for them).
        table.add_row(e.at.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], e.service, e.actor or "",
                      short_name(e.type), e.stream_id, e.device_id or "",
                      _short(e.correlation_id, whole), _short(e.causation_id, whole))
    out.print(table)
    if next_after:
        out.print(f"more: --after '{next_after}'")


def _short(id_: str | None, whole: bool) -> str:
    return (id_ or "") if whole else (id_ or "")[:13]


@app.command("verify")
def verify(
    service: list[str] = typer.Option(None, "--service", help="Only this service's store (repeat)."),
    as_json: bool = JsonOption,
) -> None:
    """Walk every stream's hash chain in each service's store; name the first event of a stream
    that was altered, removed or moved. Exit code 1 when any chain is broken."""
    services = service or list(SERVICES)

    async def work(nc: NatsClient) -> dict[str, ChainReport]:
        client = CommandClient(nc, actor=f"cli:{user()}", timeout=600.0)
        return {s: await client.call(s, VERIFY_COMMAND, VerifyChain(), ChainReport) for s in services}

    reports = run(work, as_json, "services")
    broken = any(r.problems for r in reports.values())
    if as_json:
        emit_json({"ok": not broken, "stores": {s: msgspec.to_builtins(r) for s, r in reports.items()}})
    else:
        table = Table("service", "streams", "events", "chain", title="hash chains")
        for name, r in reports.items():
            table.add_row(name, str(r.streams), str(r.events),
                          "[green]intact[/]" if r.intact else f"[red]{len(r.problems)} broken stream(s)[/]")
        out.print(table)
        for name, r in reports.items():
            for p in r.problems:
                out.print(f"[red]{name}[/] {p.stream_id} v{p.version} ({p.event_id or '-'}): "
                          f"[bold]{p.kind}[/] — {p.detail}", highlight=False)
    if broken:
        raise typer.Exit(1)


@app.command("replay")
def replay(rollout: str = typer.Option(..., "--rollout", help="The rollout to fold again."),
           as_json: bool = JsonOption) -> None:
    """Fold a rollout's events from the orchestrator's store in a fresh process and compare the
    result with the live view. Exit code 1 when they differ."""
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-m", "sdv_orchestrator.replay", rollout], env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    try:
        doc = json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        doc = {"ok": False, "error": f"the replay process failed: {result.stderr.strip()[-500:]}"}
        result.returncode = result.returncode or 3
    if as_json:
        emit_json(doc)
    elif doc.get("equal"):
        out.print(f"rollout {rollout}: {doc['events']} event(s) folded again in a fresh process — "
                  f"[green]equal[/] to the live view ({doc['status']})")
    else:
        out.print(f"[red]rollout {rollout}: {doc.get('error') or 'differs from the live view'}[/]")
        for line in doc.get("differences", []):
            out.print(f"  {line}", highlight=False)
    raise typer.Exit(result.returncode)
