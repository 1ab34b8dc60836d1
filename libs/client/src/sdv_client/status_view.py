"""Printing services' states (`sdv up --check`, `sdv ping`) and a command's failure, for people
or, with `--json`, as one JSON object on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from sdv_client.health import ServiceStatus

out = Console()
err = Console(stderr=True)


def print_statuses(statuses: list[ServiceStatus], as_json: bool, extra: dict[str, Any]) -> None:
    ok = all(s.state == "up" for s in statuses)
    if as_json:
        doc = {"ok": ok, **extra, "services": msgspec.to_builtins(statuses)}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        sys.stdout.flush()
        return
    table = Table(title="SDV Fleet services")
    for column in ("service", "state", "version", "pid", "uptime", "relayed", "detail"):
        table.add_column(column, no_wrap=column == "service")
    for s in statuses:
        colour = "green" if s.state == "up" else "red"
        table.add_row(
            s.service, f"[{colour}]{s.state}[/]", s.version or "", str(s.pid or ""),
            f"{s.uptime_s:.1f}s" if s.uptime_s is not None else "",
            str(s.relay_published) if s.relay_published is not None else "", s.detail or "",
        )
    out.print(table)
    for key, value in extra.items():
        if value is not None:
            out.print(f"{key}: {value}")


def fail(message: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
    else:
        err.print(f"[red]error:[/] {message}")
