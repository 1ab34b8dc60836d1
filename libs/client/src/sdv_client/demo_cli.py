"""`sdv demo`: demo.py on the suite that runs — the one `sdv up --data-dir D` runs in D, else the
one the environment names (SDV_NATS_URL …, as `source <data-dir>/env` sets them) — or, when
nothing runs, on a suite with local agents it starts itself (and stops afterwards)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import nats
import typer
from rich.console import Console

from sdv_client import suite_info
from sdv_client.demo import DemoResult, run_demo
from sdv_client.health import nats_credentials, quiet
from sdv_client.status_view import err, out
from sdv_client.suite import Suite, SuiteError
from sdv_client.suite_info import RunningSuite
from sdv_client.up_cli import quiet_tls_eof, start_suite, stop_on_signals
from sdv_events.auth.client_tls import NatsCaError, tls_options


def _from_env() -> RunningSuite | None:
    url = os.environ.get("SDV_NATS_URL")
    if not url:
        return None
    return RunningSuite(pid=0, data_dir="", nats_url=url, nats_creds=nats_credentials(),
                        nats_ca=os.environ.get("SDV_NATS_CA"), monitor_url=os.environ.get("SDV_MONITOR_URL"),
                        devices=[], selector="")


async def _on_running(info: RunningSuite, console: Console) -> DemoResult:
    auth = {"user_credentials": info.nats_creds} if info.nats_creds else {}
    nc = await nats.connect(info.nats_url, name="sdv-demo", connect_timeout=5, max_reconnect_attempts=-1,
                            error_cb=quiet, **auth, **tls_options(info.nats_url, info.nats_ca))
    try:
        return await run_demo(nc, console, info.dashboard_url, info.nats_creds)
    finally:
        await nc.close()


async def _on_own_suite(suite: Suite, console: Console, as_json: bool, timeout: float) -> DemoResult:
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        if await start_suite(suite, stop, quiet=as_json, timeout=timeout) is None:
            return DemoResult(ok=False, error="interrupted during start-up")
        console.print(f"started a suite in {suite.dir} with {len(suite.local.device_ids)} local agent(s); "
                      f"dashboard {suite.monitor_url}/ (until the demo ends)", highlight=False)
        demo = asyncio.create_task(run_demo(suite.nc, console, f"{suite.monitor_url}/", suite.nats_creds))
        stopping = asyncio.create_task(stop.wait())
        while not demo.done():
            await asyncio.wait({demo, stopping}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                demo.cancel()
                return DemoResult(ok=False, error="interrupted")
            for note in await suite.supervise():
                console.print(f"[yellow]{note}[/]", highlight=False)
        stopping.cancel()
        return demo.result()
    except SuiteError as exc:
        return DemoResult(ok=False, error=str(exc))
    finally:
        await suite.stop()


def demo(
    agents: int = typer.Option(3, "--agents", min=0, help="When it starts a suite itself: real local "
                               "agents to run."),
    simulate: int = typer.Option(0, "--simulate", min=0, help="When it starts a suite itself: simulated "
                                 "agents besides."),
    data_dir: Path | None = typer.Option(None, help="The --data-dir of a running `sdv up`; when none "
                                         "runs there, a suite is started in it for the demo."),
    timeout: float = typer.Option(60.0, help="When it starts a suite: seconds to wait for the "
                                  "services, and for the devices."),
    as_json: bool = typer.Option(False, "--json", help="Narrate on stderr; print one JSON object "
                                 "last on stdout: {ok, devices, upgraded, rolled_back, …}."),
) -> None:
    """A canary rollout to the local devices, then a failing one that rolls back, narrated.

    Publishes an example app, rolls it out as a canary (1 device, 50 %, 100 %) to the local
    devices (fleet=local), shows their console output, then publishes a version that crashes on
    purpose: its canary fails, the rollout aborts and rolls back. Each step says what to look at
    in the dashboard. Exit 1 when something did not go as told."""
    console = err if as_json else out
    quiet_tls_eof()
    running = suite_info.running(data_dir) if data_dir is not None else _from_env()
    try:
        if running is not None:
            result = asyncio.run(_on_running(running, console))
        else:
            if data_dir is not None:
                data_dir.mkdir(parents=True, exist_ok=True)
            suite = Suite(data_dir=data_dir, agents=agents, simulate=simulate)
            result = asyncio.run(_on_own_suite(suite, console, as_json, timeout))
    except (OSError, NatsCaError, nats.errors.Error) as exc:
        result = DemoResult(ok=False, error=f"cannot reach the suite: {exc!r}")
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        sys.stdout.flush()
    elif result.ok:
        out.print(f"\n[bold green]demo done[/] in {result.took_s:.0f}s: {result.upgraded} of "
                  f"{result.devices} device(s) upgraded, {result.rolled_back} rolled back.")
    else:
        err.print(f"[red]the demo failed:[/] {result.error or 'see above'}")
    raise typer.Exit(0 if result.ok else 1)
