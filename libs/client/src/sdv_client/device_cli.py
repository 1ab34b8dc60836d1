"""`sdv devices …`: list, get, accept, reject, decommission, label — the registry over NATS.

`accept` and `label` act on one device or, with `--selector` (and `accept --all-pending`), on
every device that matches, one request per device: the reply lists what was done and what was
refused, and the exit status is 1 when any device was refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar, get_args

import msgspec
import typer
from nats.aio.client import Client as NatsClient
from rich.table import Table

from sdv_client.cli_support import (
    EXIT_REFUSED,
    JsonOption,
    WideOption,
    builtins,
    emit_json,
    err,
    id_column,
    out,
    run,
    user,
    widen,
)
from sdv_client.inventory_cli import inventory_or_reason, print_inventory
from sdv_events.bus import CommandClient, CommandError
from sdv_events.schemas.devices import (
    AcceptDevice,
    CountDevices,
    DecommissionDevice,
    DeviceCounts,
    DeviceList,
    DeviceStatus,
    DeviceView,
    GetDevice,
    ListDevices,
    RejectDevice,
    SetLabels,
)
from sdv_events.schemas.monitor import DeviceDetail

SERVICE = "registry"
T = TypeVar("T")
_STATUSES: dict[str, DeviceStatus] = {name: name for name in get_args(DeviceStatus)}
PAGE = 1000
app = typer.Typer(help="Devices: admission, labels, presence.", no_args_is_help=True)
SelectorOption = typer.Option("", "--selector", "-l", help="Label selector, e.g. `env=prod,type in (orin)`.")
ReasonOption = typer.Option("", help="Why (kept in the device's history).")


def commands(nc: NatsClient) -> CommandClient:
    return CommandClient(nc, actor=f"cli:{user()}", timeout=30.0)


def call(name: str, request: msgspec.Struct, result_type: type[T], as_json: bool) -> T:
    return run(lambda nc: commands(nc).call(SERVICE, name, request, result_type), as_json, SERVICE)


async def matching(client: CommandClient, selector: str, status: DeviceStatus | None) -> list[str]:
    """Every device id the selector picks (in that status), page by page."""
    ids: list[str] = []
    while True:
        page = await client.call(SERVICE, "list", ListDevices(
            selector=selector, status=status, limit=PAGE, offset=len(ids)), DeviceList)
        ids += [d.device_id for d in page.devices]
        if not page.devices or len(ids) >= page.total:
            return ids


def bulk(selector: str, status: DeviceStatus | None,
         act: Callable[[CommandClient, str], Awaitable[DeviceView]], verb: str, as_json: bool) -> None:
    """`act` on every device the selector picks; each device's outcome is reported, and a
    refusal of one does not stop the others."""

    async def work(nc: NatsClient) -> tuple[list[DeviceView], dict[str, str]]:
        client = commands(nc)
        done: list[DeviceView] = []
        refused: dict[str, str] = {}
        for device_id in await matching(client, selector, status):
            try:
                done.append(await act(client, device_id))
            except CommandError as exc:
                refused[device_id] = f"{exc.code}: {exc.message}"
        return done, refused

    done, refused = run(work, as_json, SERVICE)
    if as_json:
        emit_json({"ok": not refused, verb: [d.device_id for d in done], "refused": refused,
                   "devices": builtins(done)})
    else:
        if not done and not refused:
            err.print(f"no {status + ' ' if status else ''}device matches {selector or 'the fleet'}")
        for view in done:
            out.print(f"{verb} {view.device_id}", highlight=False)
        for device_id, why in refused.items():
            err.print(f"[red]refused[/] {device_id}: {why}", highlight=False)
    if refused:
        raise typer.Exit(EXIT_REFUSED)


class DeviceStatusName(StrEnum):
    preauthorized = "preauthorized"
    pending = "pending"
    accepted = "accepted"
    rejected = "rejected"
    decommissioned = "decommissioned"


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
def list_(selector: str = SelectorOption,
          status: DeviceStatusName = typer.Option(None, help="Only devices in this status."),
          online: bool = typer.Option(None, "--online/--offline", show_default=False,
                                      help="Only online (or offline) devices."),
          limit: int = typer.Option(100, min=1, max=10_000, help="At most this many."),
          wide: bool = WideOption, as_json: bool = JsonOption) -> None:
    """Devices matching a label selector (`env=prod,type in (jetson-orin)`)."""
    found = call("list", ListDevices(selector=selector, status=_STATUSES[status] if status else None,
                                     online=online, limit=limit), DeviceList, as_json)
    if as_json:
        emit_json({"ok": True, "total": found.total, "devices": builtins(found.devices)})
        return
    widen(wide)
    table = Table(title=f"{found.total} device(s)")
    id_column(table, "device")
    for column in ("status", "online", "arch", "labels"):
        table.add_column(column)
    for d in found.devices:
        table.add_row(d.device_id, d.status, "yes" if d.online else "no",
                      d.capabilities.arch if d.capabilities else "",
                      ",".join(f"{k}={v}" for k, v in sorted(d.labels.items())))
    out.print(table)


@app.command("count")
def count(selector: str = SelectorOption, as_json: bool = JsonOption) -> None:
    """How many devices match, how many are online, and how many in each status."""
    counts = call("count", CountDevices(selector=selector), DeviceCounts, as_json)
    if as_json:
        emit_json({"ok": True, "counts": builtins(counts)})
    else:
        out.print(f"{counts.total} device(s), {counts.online} online; "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(counts.by_status.items())))


@app.command("get")
def get(device_id: str, history: int = typer.Option(20, min=1, max=1000, help="History lines."),
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
def accept(device_id: str = typer.Argument(None, help="The pending device to admit."),
           all_pending: bool = typer.Option(False, "--all-pending", help="Admit every pending device."),
           selector: str = typer.Option(None, "--selector", "-l",
                                        help="Admit every pending device this label selector picks."),
           reason: str = ReasonOption,
           key: str = typer.Option(None, "--key", help="the key fingerprint `sdv devices get` showed: "
                                   "accept only if the device still announces that key"),
           as_json: bool = JsonOption) -> None:
    """Admit a pending device (or every pending one: --all-pending, --selector): it gets
    credentials at its next announce."""
    chosen = [c for c in (device_id is not None, all_pending, selector is not None) if c]
    if len(chosen) != 1:
        raise typer.BadParameter("name a DEVICE_ID, or give --all-pending or --selector (one of them)")
    if key is not None and device_id is None:
        raise typer.BadParameter("--key pins one device's key: name its DEVICE_ID", param_hint="--key")
    if device_id is not None:
        show(call("accept", AcceptDevice(device_id, reason, key), DeviceView, as_json), as_json)
        return
    bulk(selector or "", "pending", lambda client, d: client.call(
        SERVICE, "accept", AcceptDevice(d, reason), DeviceView), "accepted", as_json)


@app.command("reject")
def reject(device_id: str, reason: str = ReasonOption, as_json: bool = JsonOption) -> None:
    """Refuse a device; an accepted one loses its credentials at once."""
    show(call("reject", RejectDevice(device_id, reason), DeviceView, as_json), as_json)


@app.command("decommission")
def decommission(device_id: str, reason: str = ReasonOption, as_json: bool = JsonOption) -> None:
    """Retire a device for good: its credentials are revoked and it is never targeted again."""
    show(call("decommission", DecommissionDevice(device_id, reason), DeviceView, as_json), as_json)


def _pairs(items: list[str]) -> dict[str, str]:
    bad = [item for item in items if "=" not in item]
    if bad:
        raise typer.BadParameter(f"{', '.join(bad)}: labels are key=value", param_hint="LABELS")
    return dict(item.split("=", 1) for item in items)


@app.command("label")
def label(args: list[str] = typer.Argument(None, metavar="[DEVICE_ID] [KEY=VALUE]...",
                                           help="The device (unless --selector), then key=value …"),
          selector: str = typer.Option(None, "--selector", "-l",
                                       help="Label every device this label selector picks."),
          remove: list[str] = typer.Option(None, "--remove", help="label key to remove (repeat)"),
          as_json: bool = JsonOption) -> None:
    """Set (key=value) or remove labels of a device, or of every device a selector picks."""
    items = list(args or [])
    if selector is None:
        if not items or "=" in items[0]:
            raise typer.BadParameter("name a DEVICE_ID first, or give --selector")
        device_id, items = items[0], items[1:]
    pairs, dropped = _pairs(items), list(remove or [])
    if not pairs and not dropped:
        raise typer.BadParameter("give key=value labels to set or --remove KEY")
    if selector is None:
        show(call("set_labels", SetLabels(device_id, pairs, dropped), DeviceView, as_json), as_json)
        return
    bulk(selector, None, lambda client, d: client.call(
        SERVICE, "set_labels", SetLabels(d, pairs, dropped), DeviceView), "labelled", as_json)
