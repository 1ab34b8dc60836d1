"""`sdv alerts list|ack`: the monitor's alerts (raised → acknowledged → resolved)."""

from __future__ import annotations

import typer
from nats.aio.client import Client as NatsClient
from rich.table import Table

from sdv_client.cli_support import JsonOption, builtins, emit_json, id_column, out, run, user
from sdv_events.bus import CommandClient
from sdv_events.schemas.monitor import AcknowledgeAlert, AlertPage, AlertView, ListAlerts

SERVICE = "monitor"
app = typer.Typer(help="Alerts: devices offline, apps failing, rollouts rolled back, services unhealthy.",
                  no_args_is_help=True)


def _client(nc: NatsClient) -> CommandClient:
    return CommandClient(nc, actor=f"cli:{user()}", timeout=10.0)


@app.command("list")
def list_(state: str = typer.Option("active", help="active | open | acknowledged | resolved | all"),
          kind: str = typer.Option(None, help="device_offline | app_failed | app_crash_loop | rollout_failed "
                                              "| service_unhealthy | databroker_unreachable"),
          device: str = typer.Option(None, help="Only alerts of this device."),
          limit: int = typer.Option(100, min=1, max=1000, help="At most this many."),
          as_json: bool = JsonOption) -> None:
    """Alerts, newest first (by default those not resolved yet)."""
    request = ListAlerts(state=state, kind=kind, device=device, limit=limit)  # type: ignore[arg-type]
    page = run(lambda nc: _client(nc).call(SERVICE, "alerts", request, AlertPage), as_json, SERVICE)
    if as_json:
        emit_json({"ok": True, "total": page.total, "alerts": builtins(page.items)})
        return
    table = Table(title=f"{page.total} alert(s)")
    id_column(table, "alert")
    for column in ("severity", "state", "raised", "message"):
        table.add_column(column)
    for a in page.items:
        colour = "red" if a.severity == "critical" else "yellow"
        table.add_row(a.alert_id, f"[{colour}]{a.severity}[/]", a.state,
                      a.raised_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"), a.message[:90])
    out.print(table)


@app.command("ack")
def ack(alert_id: str, note: str = typer.Option("", help="Why, or what is being done."),
        as_json: bool = JsonOption) -> None:
    """Acknowledge an open alert (it still resolves by itself when its condition clears)."""
    request = AcknowledgeAlert(alert_id=alert_id, note=note)
    view = run(lambda nc: _client(nc).call(SERVICE, "ack_alert", request, AlertView), as_json, SERVICE)
    if as_json:
        emit_json({"ok": True, "alert": builtins(view)})
        return
    out.print(f"{view.alert_id}: {view.state} by {view.acknowledged_by}")
