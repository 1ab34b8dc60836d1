"""`sdv`: the SDV Fleet command line. Every command takes `--json` for scripts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec
import nats
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from sdv_client.alerts_cli import app as alerts_app
from sdv_client.app_cli import app as apps_app
from sdv_client.audit_cli import app as audit_app
from sdv_client.cli_support import JsonUsageErrors, err, out
from sdv_client.deploy_cli import app as deploy_app
from sdv_client.device_cli import app as devices_app
from sdv_client.health import SERVICES, ServiceStatus, nats_ca, nats_credentials, ping_all, quiet, status_of
from sdv_client.history_cli import history
from sdv_client.inventory_cli import status as fleet_status
from sdv_client.package_cli import app as package_app
from sdv_client.rebuild_cli import rebuild
from sdv_client.rollout_cli import app as rollout_app
from sdv_client.rollout_cli import policy_app
from sdv_client.suite import Suite, SuiteError
from sdv_events.auth.client_tls import NatsCaError, tls_hint, tls_options

app = typer.Typer(help="SDV Fleet: package, roll out and watch vehicle apps.", no_args_is_help=True,
                  cls=JsonUsageErrors)
app.add_typer(package_app, name="package")
app.add_typer(devices_app, name="devices")
app.add_typer(rollout_app, name="rollout")
app.add_typer(policy_app, name="policy")
app.add_typer(apps_app, name="app")
app.add_typer(deploy_app, name="deploy")
app.add_typer(audit_app, name="audit")
app.add_typer(alerts_app, name="alerts")
app.command("history")(history)
app.command("rebuild")(rebuild)
app.command("status")(fleet_status)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def _print(statuses: list[ServiceStatus], as_json: bool, extra: dict[str, Any]) -> None:
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


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _start(suite: Suite, stop: asyncio.Event, *, as_json: bool, timeout: float
                 ) -> list[ServiceStatus] | None:
    """Start and wait for every ping, with a progress bar; None when interrupted."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), console=err, transient=True,
                  disable=as_json) as progress:
        task = progress.add_task("starting NATS and PostgreSQL", total=len(suite.services))

        def show(statuses: list[ServiceStatus]) -> None:
            waiting = [s.service for s in statuses if s.state != "up"]
            progress.update(task, completed=len(statuses) - len(waiting),
                            description=f"waiting for {', '.join(waiting)}" if waiting else "all up")

        async def start() -> list[ServiceStatus]:
            await suite.start()
            return await suite.wait_ready(timeout, on_progress=show)

        starting = asyncio.create_task(start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return None
        return starting.result()


async def _up(suite: Suite, *, check: bool, as_json: bool, timeout: float) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        statuses = await _start(suite, stop, as_json=as_json, timeout=timeout)
        if statuses is None:
            err.print("interrupted during start-up")
            return 130
        extra = {"nats_url": suite.nats_url, "database_url": suite.database_url,
                 "data_dir": str(suite.dir), "nats_creds": suite.nats_creds, "nats_ca": suite.nats_ca,
                 "enrol_creds": str(suite.enrol_creds) if suite.enrol_creds else None,
                 "monitor_url": suite.monitor_url,
                 "orchestrator_key_file": str(suite.dir / "keys" / "orchestrator-ed25519.pub")}
        _print(statuses, as_json, extra)
        if check:
            return 0
        creds = f" SDV_NATS_CREDS={suite.nats_creds}" if suite.nats_creds else ""
        ca = f" SDV_NATS_CA={suite.nats_ca}" if suite.nats_ca else ""
        err.print(f"suite running: `SDV_NATS_URL={suite.nats_url}{creds}{ca} sdv ping` checks it; "
                  "Ctrl-C stops it")
        if suite.monitor_url:
            err.print(f"monitor API: {suite.monitor_url}/api/status (OpenAPI: {suite.monitor_url}/docs)")
        if suite.enrol_creds is not None:
            pin = f" --nats-ca {suite.nats_ca}" if suite.nats_ca else ""
            err.print(f"agents enrol with `sdv-agent --enrol --nats-url {suite.nats_url}{pin} "
                      f"--enrol-creds {suite.enrol_creds} --orchestrator-key-file "
                      f"{suite.dir / 'keys' / 'orchestrator-ed25519.pub'} …`; accept them with "
                      "sdv.cmd.registry.accept")
        while not stop.is_set():
            for name in suite.restart_exited():
                err.print(f"[yellow]{name} exited; restarted (log: {suite.processes[name].log_path})[/]")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return 0
    except SuiteError as exc:
        _fail(str(exc), as_json)
        return 1
    finally:
        if not as_json:
            err.print("stopping the suite")
        await suite.stop()


def _fail(message: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
    else:
        err.print(f"[red]error:[/] {message}")


@app.command()
def up(
    check: bool = typer.Option(False, "--check", help="Start, verify every service answers, stop."),
    data_dir: Path | None = typer.Option(None, help="Keep NATS/PostgreSQL state here across runs "
                                         "(default: a temporary directory removed on exit)."),
    nats_port: int | None = typer.Option(None, help="Port of the embedded NATS (default: a free one)."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for every service to answer."),
    as_json: bool = JsonOption,
) -> None:
    """Start the whole suite: NATS, PostgreSQL and every service (or the servers named by
    SDV_NATS_URL / SDV_DATABASE_URL), wait until each service answers, keep it running.

    The embedded NATS enforces per-user permissions (operator mode): its keys are kept in
    <data-dir>/nats/trust.json (the registry gets only the signing keys it needs, in
    registry-trust.json), each service's own credentials in <data-dir>/nats/services/, the
    operator's (CLI) in <data-dir>/nats/operator.creds and the agents' enrolment credentials in
    <data-dir>/nats/enrol.creds. It requires TLS: clients pin the CA in
    <data-dir>/nats/tls/ca.pem (SDV_NATS_CA)."""
    suite = Suite(data_dir=data_dir, nats_port=nats_port)
    raise typer.Exit(asyncio.run(_up(suite, check=check, as_json=as_json, timeout=timeout)))


async def _ping(url: str, creds: str | None, ca: str | None, timeout: float, as_json: bool) -> int:
    auth = {"user_credentials": creds} if creds else {}
    try:
        # max_reconnect_attempts=0 would mean "retry forever" to nats-py's initial connect.
        nc = await nats.connect(url, name="sdv-ping", connect_timeout=2, max_reconnect_attempts=1,
                                reconnect_time_wait=0.2, allow_reconnect=False, error_cb=quiet,
                                **auth, **tls_options(url, ca))
    except NatsCaError as exc:
        _fail(str(exc), as_json)
        return 1
    except Exception as exc:
        hint = tls_hint(exc, ca) or (
            "" if creds else " (an operator-mode server needs SDV_NATS_CREDS or --data-dir)")
        _fail(f"cannot reach NATS at {url}: {exc!r}{hint}", as_json)
        return 1
    try:
        answers = await ping_all(nc, SERVICES, timeout=timeout)
    finally:
        await nc.close()
    statuses = [status_of(name, answer) for name, answer in answers.items()]
    _print(statuses, as_json, {"nats_url": url, "nats_creds": creds, "nats_ca": ca})
    return 0 if all(s.state == "up" for s in statuses) else 1


@app.command()
def ping(
    timeout: float = typer.Option(2.0, help="Seconds to wait for each answer."),
    data_dir: Path | None = typer.Option(None, help="The --data-dir of `sdv up`: connect with the "
                                         "service credentials and CA it wrote (default: SDV_NATS_CREDS, "
                                         "SDV_NATS_CA)."),
    as_json: bool = JsonOption,
) -> None:
    """Ping every service of a running suite (NATS at SDV_NATS_URL, credentials from
    SDV_NATS_CREDS and the CA to pin from SDV_NATS_CA, or both from --data-dir); exit 1 if one is down."""
    url = os.environ.get("SDV_NATS_URL", "nats://127.0.0.1:4222")
    creds = nats_credentials(data_dir)
    if creds is not None and not Path(creds).is_file():
        _fail(f"no NATS credentials at {creds} (SDV_NATS_CREDS, or the --data-dir of sdv up)", as_json)
        raise typer.Exit(1)
    raise typer.Exit(asyncio.run(_ping(url, creds, nats_ca(data_dir), timeout, as_json)))


def main() -> None:
    app()
