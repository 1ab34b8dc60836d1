"""`sdv devices …`: list, get, accept, reject, decommission, label — the registry over NATS."""

from __future__ import annotations

import typer
from nats.aio.client import Client as NatsClient
from rich.table import Table

from sdv_client.cli_support import JsonOption, builtins, emit_json, out, run, user
from sdv_client.inventory_cli import inventory_or_reason, print_inventory
from sdv_events.bus import CommandClient
from sdv_events.schemas.devices import (
    AcceptDevice,
    CountDevices,
    DecommissionDevice,
    DeviceCounts,
    DeviceList,
    DeviceView,
    GetDevice,
    ListDevices,
    RejectDevice,
    SetLabels,
)
from sdv_events.schemas.monitor import DeviceDetail

SERVICE = "registry"
app = typer.Typer(help="Devices: admission, labels, presence.", no_args_is_help=True)


def call(name: str, request: object, result_type: type, as_json: bool):  # type: ignore[no-untyped-def]
    def work(nc: NatsClient):  # type: ignore[no-untyped-def]
        return CommandClient(nc, actor=f"cli:{user()}", timeout=30.0).call(
            SERVICE, name, request, result_type)

    return run(work, as_json, SERVICE)


def show(view: DeviceView, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, "device": builtins(view)})
        return
    table = Table(show_header=False, box=None)
    caps = view.capabilities
    rows = [("device", view.device_id), ("status", view.status),
            ("key", view.key_fingerprint or "-"),
            ("online", "yes" if view.online else "no"),
            ("labels", ", ".join(f"{k}={v}" for k, v in sorted(view.labels.items())) or "-")]
    if caps is not None:
        rows += [("hardware", caps.hardware_type), ("arch", caps.arch),
                 ("runtimes", ", ".join(caps.runtimes)), ("python", caps.python_version),
                 ("kuksa", "yes" if caps.kuksa.present else "no"), ("agent", caps.agent_version)]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


@app.command("list")
def list_(selector: str = typer.Option("", "--selector", "-l"),
          status: str = typer.Option(None, help="pending | accepted | rejected | decommissioned"),
          online: bool = typer.Option(None, "--online/--offline", show_default=False),
          limit: int = typer.Option(100), as_json: bool = JsonOption) -> None:
    """Devices matching a label selector (`env=prod,type in (jetson-orin)`)."""
    found = call("list", ListDevices(selector=selector, status=status, online=online,  # type: ignore[arg-type]
                                     limit=limit), DeviceList, as_json)
    if as_json:
        emit_json({"ok": True, "total": found.total, "devices": builtins(found.devices)})
        return
    table = Table("device", "status", "online", "arch", "labels", title=f"{found.total} device(s)")
    for d in found.devices:
        table.add_row(d.device_id, d.status, "yes" if d.online else "no",
                      d.capabilities.arch if d.capabilities else "",
                      ",".join(f"{k}={v}" for k, v in sorted(d.labels.items())))
    out.print(table)


@app.command("count")
def count(selector: str = typer.Option("", "--selector", "-l"), as_json: bool = JsonOption) -> None:
    counts = call("count", CountDevices(selector=selector), DeviceCounts, as_json)
    if as_json:
        emit_json({"ok": True, "counts": builtins(counts)})
    else:
        out.print(f"{counts.total} device(s), {counts.online} online; "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(counts.by_status.items())))


@app.command("get")
def get(device_id: str, history: int = typer.Option(20, min=1, max=1000, help="history lines"),
        as_json: bool = JsonOption) -> None:
    """The device (registry) with its apps and recent history (monitor)."""
    async def work(nc: NatsClient) -> tuple[DeviceView, DeviceDetail | None, str | None]:
        view = await CommandClient(nc, actor=f"cli:{user()}", timeout=30.0).call(
            SERVICE, "get", GetDevice(device_id), DeviceView)
        return (view, *await inventory_or_reason(nc, device_id, history))

    view, detail, reason = run(work, as_json, SERVICE)
    if as_json:
        emit_json({"ok": True, "device": builtins(view), "inventory": builtins(detail),
                   "inventory_error": reason})
        return
    show(view, as_json)
    print_inventory(detail, reason)


@app.command("accept")
def accept(device_id: str, reason: str = typer.Option(""),
           key: str = typer.Option(None, "--key", help="the key fingerprint `sdv devices get` showed: "
                                   "accept only if the device still announces that key"),
           as_json: bool = JsonOption) -> None:
    """Admit a pending device: it gets credentials at its next announce."""
    show(call("accept", AcceptDevice(device_id, reason, key), DeviceView, as_json), as_json)


@app.command("reject")
def reject(device_id: str, reason: str = typer.Option(""), as_json: bool = JsonOption) -> None:
    """Refuse a device; an accepted one loses its credentials at once."""
    show(call("reject", RejectDevice(device_id, reason), DeviceView, as_json), as_json)


@app.command("decommission")
def decommission(device_id: str, reason: str = typer.Option(""), as_json: bool = JsonOption) -> None:
    show(call("decommission", DecommissionDevice(device_id, reason), DeviceView, as_json), as_json)


@app.command("label")
def label(device_id: str, labels: list[str] = typer.Argument(None, help="key=value …"),
          remove: list[str] = typer.Option(None, "--remove", help="label key to remove (repeat)"),
          as_json: bool = JsonOption) -> None:
    """Set (key=value) or remove labels."""
    pairs = dict(item.split("=", 1) for item in (labels or []) if "=" in item)
    show(call("set_labels", SetLabels(device_id, pairs, list(remove or [])), DeviceView, as_json),
         as_json)
