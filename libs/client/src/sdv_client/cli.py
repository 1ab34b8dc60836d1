"""`sdv`: the SDV Fleet command line. Every command takes `--json` for scripts."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import nats
import typer

from sdv_client.alerts_cli import app as alerts_app
from sdv_client.app_cli import app as apps_app
from sdv_client.audit_cli import app as audit_app
from sdv_client.cli_support import JsonUsageErrors
from sdv_client.demo_cli import demo
from sdv_client.deploy_cli import app as deploy_app
from sdv_client.device_cli import app as devices_app
from sdv_client.health import (
    OPERATOR_CREDS_ENV,
    SERVICES,
    nats_ca,
    nats_credentials,
    ping_all,
    quiet,
    status_of,
)
from sdv_client.history_cli import history
from sdv_client.inventory_cli import status as fleet_status
from sdv_client.operators_cli import app as operators_app
from sdv_client.package_cli import app as package_app
from sdv_client.policy_cli import policy_app
from sdv_client.rebuild_cli import rebuild
from sdv_client.rollout_cli import app as rollout_app
from sdv_client.status_view import fail, print_statuses
from sdv_client.up_cli import up
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
app.add_typer(operators_app, name="operators")
app.command("history")(history)
app.command("rebuild")(rebuild)
app.command("status")(fleet_status)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


@app.callback()
def _credentials(creds: Path | None = typer.Option(
        None, "--creds", envvar=OPERATOR_CREDS_ENV, show_envvar=True,
        help="An operator's `.creds` file (from `sdv operators add`) to act as; default: "
             "SDV_NATS_CREDS, which `sdv up`'s env file sets to its admin's.")) -> None:
    if creds is not None:
        os.environ[OPERATOR_CREDS_ENV] = str(creds)  # every sub-command connects with it
app.command("up")(up)
app.command("demo")(demo)


async def _ping(url: str, creds: str | None, ca: str | None, timeout: float, as_json: bool) -> int:
    auth = {"user_credentials": creds} if creds else {}
    try:
        # max_reconnect_attempts=0 would mean "retry forever" to nats-py's initial connect.
        nc = await nats.connect(url, name="sdv-ping", connect_timeout=2, max_reconnect_attempts=1,
                                reconnect_time_wait=0.2, allow_reconnect=False, error_cb=quiet,
                                **auth, **tls_options(url, ca))
    except NatsCaError as exc:
        fail(str(exc), as_json)
        return 1
    except Exception as exc:
        hint = tls_hint(exc, ca) or (
            "" if creds else " (an operator-mode server needs SDV_NATS_CREDS or --data-dir)")
        fail(f"cannot reach NATS at {url}: {exc!r}{hint}", as_json)
        return 1
    try:
        answers = await ping_all(nc, SERVICES, timeout=timeout)
    finally:
        await nc.close()
    statuses = [status_of(name, answer) for name, answer in answers.items()]
    print_statuses(statuses, as_json, {"nats_url": url, "nats_creds": creds, "nats_ca": ca})
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
        fail(f"no NATS credentials at {creds} (SDV_NATS_CREDS, or the --data-dir of sdv up)", as_json)
        raise typer.Exit(1)
    raise typer.Exit(asyncio.run(_ping(url, creds, nats_ca(data_dir), timeout, as_json)))


def main() -> None:
    app()
