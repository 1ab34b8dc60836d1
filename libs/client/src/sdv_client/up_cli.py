"""`sdv up`: the whole suite and a local fleet on this machine, kept running until Ctrl-C.

Start order: NATS and PostgreSQL, the services (until each answers ping), the local agents
(until each device is online), then one short block says where the dashboard is, how to point
the CLI at the suite (`source <data-dir>/env`) and what to try; `--demo` then runs `sdv demo`
(demo.py) on the fleet. From then on every child is supervised (children.py); one that keeps
dying stops the suite, loudly. Ctrl-C or SIGTERM stops everything, apps of the agents included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from sdv_client import suite_info
from sdv_client.demo import DemoResult, run_demo
from sdv_client.health import ServiceStatus
from sdv_client.local_agents import SELECTOR
from sdv_client.status_view import err, fail, out, print_statuses
from sdv_client.suite import Suite, SuiteError
from sdv_client.suite_info import RunningSuite

SUPERVISE_EVERY_S = 1.0


def quiet_tls_eof() -> None:
    """asyncio warns each time a TLS connection to NATS closes (nats-py's StreamReader asks to
    keep a half-closed connection open, which TLS cannot): noise in the terminal, not news."""
    logging.getLogger("asyncio").addFilter(lambda record: "eof_received()" not in record.getMessage())


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def start_suite(suite: Suite, stop: asyncio.Event, *, quiet: bool,
                      timeout: float) -> list[ServiceStatus] | None:
    """Servers, services (every ping answered), local agents (every device online), with a
    progress line; None when interrupted."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), console=err, transient=True,
                  disable=quiet) as progress:
        task = progress.add_task("starting NATS and PostgreSQL", total=len(suite.services))

        def services(statuses: list[ServiceStatus]) -> None:
            waiting = [s.service for s in statuses if s.state != "up"]
            progress.update(task, completed=len(statuses) - len(waiting),
                            description=f"waiting for {', '.join(waiting)}" if waiting else "all up")

        def devices(online: int, expected: int) -> None:
            progress.update(task, total=expected, completed=online,
                            description=f"local devices online ({SELECTOR})")

        async def start() -> list[ServiceStatus]:
            await suite.start()
            # The agents start as soon as the registry can pre-authorise them: they boot while
            # the other services do.
            await suite.wait_ready(timeout, on_progress=services, only=("registry",))
            agents = await suite.start_agents()
            statuses = await suite.wait_ready(timeout, on_progress=services)
            if agents:
                await suite.wait_devices(timeout, on_progress=devices)
            return statuses

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


def running_suite(suite: Suite, devices: list[str]) -> RunningSuite:
    return RunningSuite(pid=os.getpid(), data_dir=str(suite.dir), nats_url=str(suite.nats_url),
                        nats_creds=suite.nats_creds, nats_ca=suite.nats_ca, monitor_url=suite.monitor_url,
                        devices=devices, selector=SELECTOR)


def print_block(suite: Suite, info: RunningSuite, env_file: Path, took_s: float, *, demo: bool) -> None:
    devices = info.devices
    listed = f"{', '.join(devices[:4])}{' …' if len(devices) > 4 else ''}"
    fleet = (f"{len(devices)} local device{'s' if len(devices) != 1 else ''} online ({listed})"
             if devices else "no local devices")
    kept = "removed when it stops; --data-dir keeps it" if suite.data_dir is None else "kept"
    next_steps = "sdv demo · sdv status · sdv devices list · sdv rollout list · sdv --help"
    lines = [
        f"[bold green]SDV Fleet is up[/] in {took_s:.1f}s: {len(suite.services)} services, {fleet}",
        f"  dashboard  [link={info.dashboard_url}]{info.dashboard_url}[/link]" if info.dashboard_url else "",
        f"  the CLI    in another shell: [bold]source {env_file}[/]  (then: sdv status)",
        "  try        " + ("the demo starts now; then " if demo else "") + next_steps,
        f"  data       {suite.dir} ({kept}); logs in {suite.dir / 'logs'}, agents in {suite.local.root}",
        "Ctrl-C stops everything.",
    ]
    out.print("\n".join(line for line in lines if line), highlight=False)
    for warning in suite.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)


async def _demo(suite: Suite, as_json: bool) -> DemoResult:
    result = await run_demo(suite.nc, err if as_json else out, suite.monitor_url and f"{suite.monitor_url}/",
                            suite.nats_creds)
    if as_json:
        sys.stdout.write(json.dumps({"demo": result.to_json()}) + "\n")
        sys.stdout.flush()
    elif result.ok:
        out.print(f"\n[bold green]demo done[/] in {result.took_s:.0f}s: {result.upgraded} device(s) "
                  f"upgraded, {result.rolled_back} rolled back. The suite keeps running: Ctrl-C stops it.")
    else:
        out.print(f"\n[bold red]the demo failed:[/] {result.error or 'see above'}. The suite keeps running.")
    return result


async def run_up(suite: Suite, *, check: bool, demo: bool, as_json: bool, timeout: float) -> int:
    quiet_tls_eof()
    stop = asyncio.Event()
    stop_on_signals(stop)
    began = time.monotonic()
    demo_task: asyncio.Task[DemoResult] | None = None
    try:
        statuses = await start_suite(suite, stop, quiet=as_json, timeout=timeout)
        if statuses is None:
            err.print("interrupted during start-up")
            return 130
        info = running_suite(suite, suite.local.device_ids)
        env_file = suite_info.write(info)
        if check or as_json:
            print_statuses(statuses, as_json, {
                "nats_url": suite.nats_url, "database_url": suite.database_url, "data_dir": str(suite.dir),
                "nats_creds": suite.nats_creds, "nats_ca": suite.nats_ca,
                "enrol_creds": str(suite.enrol_creds) if suite.enrol_creds else None,
                "monitor_url": suite.monitor_url, "dashboard_url": info.dashboard_url,
                "env_file": str(env_file), "devices": info.devices,
                "orchestrator_key_file": str(suite.key_files.orchestrator_pub),
                "packager_key_file": str(suite.key_files.packager_pub),
                "up_s": round(time.monotonic() - began, 2)})
        if check:
            return 0
        if not as_json:
            print_block(suite, info, env_file, time.monotonic() - began, demo=demo)
        if demo:
            demo_task = asyncio.create_task(_demo(suite, as_json))
        while not stop.is_set():
            for note in await suite.supervise():
                err.print(f"[yellow]{note}[/]", highlight=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SUPERVISE_EVERY_S)
        return 0
    except SuiteError as exc:
        fail(f"{exc}\nstopping everything", as_json)
        return 1
    finally:
        if demo_task is not None and not demo_task.done():
            demo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await demo_task
        if not as_json:
            err.print("stopping the suite")
        suite_info.remove(suite.dir)
        await suite.stop()


def up(
    agents: int = typer.Option(3, "--agents", min=0, help="Real local edge agents to run (car-1 …), "
                               "each with its own data dir under <data-dir>/agents/."),
    simulate: int = typer.Option(0, "--simulate", min=0, help="Simulated agents to run besides, in one "
                                 "process (sim-0000 …): no app processes, for many devices."),
    demo: bool = typer.Option(False, "--demo", help="Once everything is up, run `sdv demo`: a canary "
                              "rollout and a failing one that rolls back."),
    check: bool = typer.Option(False, "--check", help="Start, verify every service answers and every "
                               "local device is online, stop."),
    data_dir: Path | None = typer.Option(None, help="Keep NATS/PostgreSQL/agents' state here across "
                                         "runs (default: a temporary directory removed on exit)."),
    nats_port: int | None = typer.Option(None, help="Port of the embedded NATS (default: a free one)."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for every service to answer, and again "
                                  "for every local device to come online."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
) -> None:
    """Start the whole suite and a local fleet of 3 edge agents; keep it running until Ctrl-C.

    NATS, PostgreSQL, every service (or the servers named by SDV_NATS_URL / SDV_DATABASE_URL)
    and the local agents, enrolled and labelled fleet=local; then it prints where the dashboard
    is and how to point the CLI at it, and restarts whatever dies.

    The embedded NATS enforces per-user permissions (operator mode) over TLS: its keys are kept
    in <data-dir>/nats/trust.json (the registry gets only the signing keys it needs, in
    registry-trust.json), each service's own credentials in <data-dir>/nats/services/, the
    bootstrap admin's (CLI; `sdv operators add` adds people with roles) in
    <data-dir>/nats/operator.creds and the agents' enrolment credentials in
    <data-dir>/nats/enrol.creds; clients pin the CA in <data-dir>/nats/tls/ca.pem. The CLI's
    settings are in <data-dir>/env while it runs (`source` it)."""
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        if (running := suite_info.running(data_dir)) is not None:
            fail(f"a suite already runs in {data_dir} (sdv up, pid {running.pid}): "
                 f"source {data_dir / suite_info.ENV_FILE} to use it", as_json)
            raise typer.Exit(1)
    suite = Suite(data_dir=data_dir, nats_port=nats_port, agents=agents, simulate=simulate)
    raise typer.Exit(asyncio.run(run_up(suite, check=check, demo=demo, as_json=as_json, timeout=timeout)))
