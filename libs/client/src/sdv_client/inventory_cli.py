"""What the monitor knows, for the CLI: a device's software inventory and history (shown by
`sdv devices get`), and `sdv status` — the fleet, active rollouts, app states on one screen."""

from __future__ import annotations

from datetime import datetime

from nats.aio.client import Client as NatsClient
from rich.table import Table

from sdv_client.cli_support import JsonOption, builtins, emit_json, id_column, out, run, user
from sdv_events.bus import CommandClient, CommandError
from sdv_events.schemas.monitor import DeviceDetail, FleetStatus, GetDeviceInventory, GetFleetStatus

SERVICE = "monitor"


async def inventory_or_reason(nc: NatsClient, device_id: str, history: int
                              ) -> tuple[DeviceDetail | None, str | None]:
    """The device's inventory, or why there is none (the monitor down is not the registry's
    answer failing: the caller still shows what it has)."""
    try:
        client = CommandClient(nc, actor=f"cli:{user()}", timeout=5.0)
        found = await client.call(SERVICE, "device", GetDeviceInventory(device_id=device_id,
                                                                          history_limit=history),
                                  DeviceDetail)
    except CommandError as exc:
        return None, f"{exc.code}: {exc.message}"
    return found, None


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def print_inventory(detail: DeviceDetail | None, reason: str | None) -> None:
    if detail is None:
        out.print(f"[yellow]no inventory from the monitor[/] ({reason})", highlight=False)
        return
    apps = Table("app", "desired", "installed", "state", "healthy", "restarts", "since", "last error",
                 title="apps")
    for a in detail.apps:
        colour = "red" if a.state == "FAILED" else "green" if a.state == "RUNNING" else "yellow"
        apps.add_row(a.app, a.desired_version or "-", a.installed_version or "-", f"[{colour}]{a.state}[/]",
                     "yes" if a.healthy else "no", "-" if a.restarts is None else str(a.restarts),
                     _when(a.since), (a.last_error or "")[:60])
    out.print(apps)
    history = Table("at", "from", "what", title="recent history")
    for h in detail.history:
        history.add_row(_when(h.at), h.source, h.summary[:100])
    out.print(history)


def status(as_json: bool = JsonOption) -> None:
    """One screen: devices online/offline, active rollouts with progress, app states."""
    async def work(nc: NatsClient) -> FleetStatus:
        client = CommandClient(nc, actor=f"cli:{user()}", timeout=10.0)
        return await client.call(SERVICE, "status", GetFleetStatus(), FleetStatus)

    found = run(work, as_json, SERVICE)
    if as_json:
        emit_json({"ok": True, "status": builtins(found)})
        return
    out.print(f"[bold]{found.devices}[/] device(s): [green]{found.online} online[/], "
              f"{found.devices - found.online} offline; "
              + ", ".join(f"{k} {v}" for k, v in sorted(found.by_status.items())))
    if found.open_alerts:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(found.open_alerts.items()))
        out.print(f"[red]open alerts:[/] {counts} (sdv alerts list)")
    if found.apps_by_state:
        out.print("apps: " + ", ".join(f"{k} {v}" for k, v in sorted(found.apps_by_state.items())))
    table = Table(title="active rollouts")
    id_column(table, "rollout")
    for column in ("app", "version", "status", "wave", "progress"):
        table.add_column(column)
    for r in found.active_rollouts:
        done = r.succeeded + r.failed
        table.add_row(r.rollout_id, r.app, r.version, r.status,
                      f"{r.current_wave + 1}/{r.waves}" if r.waves else "-",
                      f"{done}/{r.devices} ({r.failed} failed)")
    out.print(table if found.active_rollouts else "no active rollouts")


