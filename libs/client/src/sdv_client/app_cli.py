"""`sdv app …`: `init` writes a new app folder (app_template.py); the rest act on one app on one
device, now — pause, resume, stop, start, restart, stdin — and read its console (history and FTS
search from the device's own store, or `--follow` live).

These are the device's interactive ops (`sdv.device.<id>.ops.<op>`): the agent answers, so the
device must be online. They hold the app in that state until its desired state changes; a fleet
change goes through `sdv rollout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable
from pathlib import Path
from typing import Literal, TypeVar

import typer
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from sdv_client.app_template import TemplateError, write_app
from sdv_client.cli_support import EXIT_USAGE, Failure, JsonOption, builtins, emit_json, fail, out, run, user
from sdv_events.bus import CommandClient
from sdv_events.schemas.device_ops import APP_OPS, AppOp, AppStatus, LogLines, LogsQuery, StdinOp
from sdv_events.subjects import ops_subject

app = typer.Typer(help="Apps: write a new one (init); act on one app on one device (pause, resume, "
                  "stop, start, restart, stdin, logs).",
                  no_args_is_help=True)
T = TypeVar("T")
OP_TIMEOUT_S = 30.0  # a stop waits for the app's graceful exit (the agent's stop timeout)


def op_call(device_id: str, op: str, request: AppOp | StdinOp | LogsQuery, result_type: type[T],
            as_json: bool) -> T:
    def work(nc: NatsClient) -> Awaitable[T]:
        return CommandClient(nc, actor=f"cli:{user()}", timeout=OP_TIMEOUT_S).request(
            ops_subject(device_id, op), request, result_type, answerer=f"agent of device {device_id}")

    return run(work, as_json, f"agent of {device_id}")


def show_status(status: AppStatus, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, "app": builtins(status)})
        return
    held = f" (held {status.held})" if status.held else ""
    health = "healthy" if status.healthy else "not healthy"
    out.print(f"{status.app} {status.version or '-'}: {status.state or 'not installed'}{held}, {health}"
              + (f", pid {status.pid}" if status.pid else ""))


def _op_command(op: str) -> None:
    def command(device_id: str, app_name: str = typer.Argument(..., metavar="APP"),
                as_json: bool = JsonOption) -> None:
        show_status(op_call(device_id, op, AppOp(app_name), AppStatus, as_json), as_json)

    command.__doc__ = f"{op.capitalize()} APP on DEVICE_ID now (held until its desired state changes)."
    app.command(op)(command)


for _op in APP_OPS:
    _op_command(_op)


@app.command("stdin")
def stdin(device_id: str, app_name: str = typer.Argument(..., metavar="APP"),
          text: str = typer.Argument(..., help="written to the app's stdin; a newline is added"),
          as_json: bool = JsonOption) -> None:
    """Write a line to the app's stdin (its answer shows in `sdv app logs`)."""
    show_status(op_call(device_id, "stdin", StdinOp(app_name, text + "\n"), AppStatus, as_json), as_json)


@app.command("logs")
def logs(device_id: str, app_name: str = typer.Argument(None, metavar="[APP]"),
         lines: int = typer.Option(50, "--lines", "-n", min=1, max=5000, help="How many lines."),
         stream: str = typer.Option(None, help="stdout | stderr"),
         search: str = typer.Option(None, "--search", "-s", help="FTS5 query over the device's history"),
         follow: bool = typer.Option(False, "--follow", "-f", help="then print new lines as they arrive"),
         as_json: bool = JsonOption) -> None:
    """The last console lines of APP (or of every app on DEVICE_ID when APP is left out, or those
    matching --search), from the device's own store."""
    if stream not in (None, "stdout", "stderr"):
        raise typer.BadParameter("stdout or stderr", param_hint="--stream")
    chosen: Literal["stdout", "stderr"] | None = stream  # type: ignore[assignment]
    found: LogLines = op_call(device_id, "logs", LogsQuery(app=app_name, lines=lines, stream=chosen,
                                                           search=search), LogLines, as_json)
    if as_json and not follow:
        emit_json({"ok": True, "lines": builtins(found.lines)})
        return
    for entry in found.lines:
        _print_line(entry.app, entry.stream, entry.ts, entry.line, as_json)
    if follow:
        _follow(device_id, app_name, stream, as_json)


def _print_line(app_name: str, stream: str, ts: float, line: str, as_json: bool) -> None:
    if as_json:  # one JSON object per line while following
        emit_json({"app": app_name, "stream": stream, "ts": ts, "line": line})
        return
    when = dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]
    colour = "red" if stream == "stderr" else "dim"
    out.print(f"[{colour}]{when} {app_name}[/] {line}", highlight=False, markup=True)


def _follow(device_id: str, app_name: str | None, stream: str | None, as_json: bool) -> None:
    """New lines live, from core NATS (the agent publishes each line once to JetStream SDV_LOGS;
    a core subscriber sees the same messages). Ends with Ctrl-C."""
    subject = f"sdv.logs.{device_id}.{app_name or '*'}.{stream or '*'}"

    async def work(nc: NatsClient) -> None:
        async def on_line(msg: Msg) -> None:
            _, _, _, app_token, stream_token = msg.subject.split(".", 4)
            ts = float((msg.headers or {}).get("Sdv-Ts", "0") or 0)
            _print_line(app_token, stream_token, ts, msg.data.decode(errors="replace"), as_json)

        await nc.subscribe(subject, cb=on_line)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        run(work, as_json, f"agent of {device_id}")


@app.command("init")
def init(name: str = typer.Argument(..., help="The app's name (lowercase letters, digits, hyphens)."),
         folder: Path = typer.Option(None, "--dir", help="Where to write it (default: ./NAME); must "
                                     "not exist yet, or be empty."),
         as_json: bool = JsonOption) -> None:
    """Write a working app folder: sdv-app.toml (every field explained), main.py reading
    Vehicle.Speed through the generated signal library, and a test (`python -m unittest`)."""
    target = folder if folder is not None else Path(name)
    try:
        written = write_app(target, name)
    except TemplateError as exc:
        fail(Failure(str(exc), code="invalid_request", exit_code=EXIT_USAGE), as_json)
    if as_json:
        emit_json({"ok": True, "app": name, "folder": str(target), "files": [str(p) for p in written]})
        return
    out.print(f"[green]wrote[/] {target}/: " + ", ".join(p.name for p in written), highlight=False)
    out.print(f"next: `cd {target} && python -m unittest` (its test), then `sdv package publish {target}`",
              highlight=False)
