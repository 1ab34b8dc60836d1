"""`sdv rollout …`: create (and start), get, watch, pause, resume, cancel, rollback, activate,
list (`sdv policy …` is policy_cli.py). Talks to the orchestrator over NATS (see cli_support).
The schedule options (windows, rate, start time, gates, hold) are in schedule_options.py.

`watch` and `create --watch` end with the rollout's outcome: exit 0 when it completed, 1 when it
ended aborted, rolled back or cancelled (`--json`: `"ok": false` and `"code": "rollout_<status>"`),
and 124 when the watch timed out before the rollout ended."""

from __future__ import annotations

import asyncio
import contextlib
import time
from enum import StrEnum
from typing import TypeVar

import msgspec
import typer
from nats.aio.client import Client as NatsClient
from rich.live import Live
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
from sdv_client.schedule_options import (
    ActivationTimeoutOption,
    GateOption,
    HoldOption,
    LabelWindowOption,
    MaxInFlightOption,
    MaxRateOption,
    RateGrowthOption,
    RateOption,
    StartAtOption,
    WindowOption,
    schedule_brief,
    schedule_lines,
    schedule_of,
)
from sdv_events.bus import CommandClient
from sdv_events.schemas.rollouts import (
    MAX_PAGE,
    CreateRolloutRequest,
    GetRollout,
    ListRollouts,
    RolloutList,
    RolloutRef,
    RolloutView,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
)
from sdv_events.schemas.scheduling import ActivateRollout

SERVICE = "orchestrator"
TERMINAL = {"completed", "aborted", "cancelled", "rolled_back"}
EXIT_WATCH_TIMEOUT = 124  # as timeout(1): the rollout had not ended when the watch gave up
app = typer.Typer(help="Rollouts: canary, waves, thresholds, pause, cancel, rollback.",
                  no_args_is_help=True)


class RolloutStatus(StrEnum):
    created = "created"
    running = "running"  # waiting ones too (they run: they wait for a time, not an operator)
    paused = "paused"
    completed = "completed"
    aborted = "aborted"
    cancelled = "cancelled"
    rolled_back = "rolled_back"


class StrategyKind(StrEnum):
    canary = "canary"
    rolling = "rolling"
    all_at_once = "all-at-once"


T = TypeVar("T")


class OfflineChoice(StrEnum):
    skip = "skip"
    wait = "wait"
    fail = "fail"


def client(nc: NatsClient) -> CommandClient:
    return CommandClient(nc, actor=f"cli:{user()}", timeout=60.0)


def call(name: str, request: msgspec.Struct, result_type: type[T], as_json: bool) -> T:
    return run(lambda nc: client(nc).call(SERVICE, name, request, result_type), as_json, SERVICE)


async def get_all(commands: CommandClient, rollout_id: str) -> RolloutView:
    """The whole view, page by page (one reply holds at most MAX_PAGE rows of each list, so it
    stays under NATS's max payload at any fleet size). The rollout may move on between pages:
    each row is as of the page that carried it."""
    view = await commands.call(SERVICE, "get", GetRollout(rollout_id=rollout_id, limit=MAX_PAGE),
                               RolloutView)
    waves, devices, excluded = list(view.waves), list(view.devices), dict(view.excluded)
    offset = view.offset + view.limit
    while offset < max(view.waves_total, view.devices_total, view.excluded_total):
        page = await commands.call(
            SERVICE, "get", GetRollout(rollout_id=rollout_id, offset=offset, limit=MAX_PAGE),
            RolloutView)
        waves += page.waves
        devices += page.devices
        excluded |= page.excluded
        offset += page.limit
    return msgspec.structs.replace(view, waves=waves, devices=devices, excluded=excluded,
                                   limit=max(len(waves), len(devices), len(excluded), 1))


def table_of(view: RolloutView) -> Table:
    table = Table(title=f"rollout {view.rollout_id} — {view.app} {view.version}: {view.status}")
    for column in ("wave", "size", "succeeded", "failed", "skipped", "pending", "offline", "state"):
        table.add_column(column)
    for w in view.waves:
        colour = {"completed": "green", "aborted": "red", "running": "yellow"}.get(w.state, "")
        table.add_row(str(w.index + 1), str(w.size), str(w.succeeded), str(w.failed), str(w.skipped),
                      str(w.pending), str(w.offline), f"[{colour}]{w.state}[/]" if colour else w.state)
    table.caption = "\n".join(summary_lines(view)) or None
    return table


def summary_lines(view: RolloutView) -> list[str]:
    """What the wave table does not say: waiting, the schedule, devices waiting to switch,
    offline devices, already-current ones, the rollback."""
    lines = []
    if view.reason:
        lines.append(view.reason)
    if view.waiting is not None:
        lines.append(f"waiting: {view.waiting.message}")
    lines += schedule_lines(view.schedule)
    if view.queued_total:
        lines.append(f"queued: {view.queued_total} device(s) of the wave not targeted yet")
    if view.staged_total or view.activated_total:
        by = ", ".join(f"{gate}: {n}" for gate, n in sorted(view.deferred_by.items()))
        lines.append(f"staged (downloaded, waiting to switch): {view.staged_total}; deferred "
                     f"{view.deferred_total}" + (f" ({by})" if by else "")
                     + (f"; hold released for {view.activated_total}" if view.activated_total else ""))
    if view.offline_total or view.skipped_total:
        lines.append(f"waiting: offline {view.offline_total}, skipped offline {view.skipped_total} "
                     f"(offline devices: {view.offline})")
    if view.already_current_total:
        lines.append(f"already current: {view.already_current_total} (counted as succeeded)")
    if view.rollback:
        lines.append(f"rollback {view.rollback.replace('_', ' ')}: {view.rolled_back_total} rolled "
                     f"back, {view.rollback_unconfirmed_total} unconfirmed")
    return lines


def show(view: RolloutView, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, "rollout": builtins(view)})
        return
    table = table_of(view)
    table.caption = None  # the lines below the table instead: a caption folds long lines
    out.print(table)
    for line in summary_lines(view):
        out.print(line, highlight=False)
    if view.excluded:
        out.print(f"excluded {view.excluded_total} device(s):")
        for device_id, why in list(view.excluded.items())[:20]:
            out.print(f"  {device_id}: {why}", highlight=False)


def show_outcome(view: RolloutView, as_json: bool) -> None:
    """The watched rollout as it ended, and the exit status a script can act on: 0 completed,
    1 aborted / rolled back / cancelled, 124 still going when the watch gave up."""
    if view.status == "completed":
        show(view, as_json)
        return
    ended = view.status in TERMINAL
    code = EXIT_REFUSED if ended else EXIT_WATCH_TIMEOUT
    message = (f"rollout {view.rollout_id} ended {view.status.replace('_', ' ')}"
               + (f": {view.reason}" if view.reason else "") if ended else
               f"rollout {view.rollout_id} is still {view.status}: the watch timed out")
    if as_json:
        emit_json({"ok": False, "error": message,
                   "code": f"rollout_{view.status}" if ended else "watch_timeout",
                   "rollout": builtins(view)})
    else:
        out.print(table_of(view))
        err.print(f"[red]{message}[/]", highlight=False)
    raise typer.Exit(code)


def _watch(rollout_id: str, as_json: bool, timeout_s: float) -> RolloutView:
    async def work(nc: NatsClient) -> RolloutView:
        commands = client(nc)
        deadline = time.monotonic() + timeout_s
        view = await commands.call(SERVICE, "get", RolloutRef(rollout_id), RolloutView)
        # With --json, stdout carries the one final JSON object and nothing else.
        live = None if as_json else Live(table_of(view), console=out, auto_refresh=False,
                                         transient=True)
        with live or contextlib.nullcontext():
            while view.status not in TERMINAL and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                view = await commands.call(SERVICE, "get", RolloutRef(rollout_id), RolloutView)
                if live is not None:
                    live.update(table_of(view), refresh=True)
        return await get_all(commands, rollout_id) if as_json else view

    return run(work, as_json, SERVICE)


@app.command("create")
def create(
    app_name: str = typer.Argument(..., metavar="APP"),
    version: str = typer.Argument(...),
    selector: str = typer.Option(None, "--selector", "-l", help="label selector, e.g. env=prod"),
    device: list[str] = typer.Option(None, "--device", "-d", help="explicit device id (repeat)"),
    strategy: StrategyKind = typer.Option(StrategyKind.canary, "--strategy", help="How devices are batched."),
    waves: str = typer.Option("1,10%,50%,100%", help="canary: cumulative wave sizes"),
    batch_size: int = typer.Option(10, help="rolling: devices per batch"),
    success: float = typer.Option(0.95, help="share of a wave that must succeed to advance"),
    error: float = typer.Option(0.05, help="share of a wave whose failure aborts the rollout"),
    device_timeout: float = typer.Option(600.0, help="seconds a device may take to report"),
    soak: float = typer.Option(0.0, help="seconds to wait between waves"),
    offline: OfflineChoice = typer.Option(
        OfflineChoice.skip, "--offline",
        help="a device offline at its deadline: skip it (not counted, reported apart; it takes "
             "the version when it is back), wait for it, or fail it"),
    no_rollback: bool = typer.Option(False, "--no-rollback", help="on abort, leave devices as they are"),
    no_start: bool = typer.Option(False, "--no-start", help="create only; start later"),
    watch: bool = typer.Option(False, "--watch", help="follow progress until it ends"),
    window: list[str] = WindowOption, label_window: list[str] = LabelWindowOption,
    rate: float = RateOption, rate_growth: float = RateGrowthOption, max_rate: float = MaxRateOption,
    max_in_flight: int = MaxInFlightOption, start_at: str = StartAtOption,
    gate: list[str] = GateOption, hold: bool = HoldOption,
    activation_timeout: float = ActivationTimeoutOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a rollout of APP VERSION to a selector or devices, and start it (its devices are
    targeted as its windows, start time and rate allow)."""
    schedule = schedule_of(windows=window, label_windows=label_window, rate=rate,
                           rate_growth=rate_growth, max_rate=max_rate, max_in_flight=max_in_flight,
                           start_at=start_at, gates=gate, hold=hold,
                           activation_timeout=activation_timeout, as_json=as_json)
    request = CreateRolloutRequest(
        package=app_name, version=version,
        target=Target(selector=selector) if selector else Target(device_ids=list(device or [])),
        strategy=Strategy(kind=strategy.value, waves=[w.strip() for w in waves.split(",")],
                          batch_size=batch_size),
        thresholds=Thresholds(success, error), timeouts=Timeouts(device_timeout, soak),
        auto_rollback=not no_rollback, start=not no_start, offline=offline.value,
        schedule=schedule,
    )
    view = call("create", request, RolloutView, as_json)
    if not watch:
        show(view, as_json)
        return
    if view.status not in TERMINAL:
        view = _watch(view.rollout_id, as_json, timeout_s=24 * 3600)
    show_outcome(view, as_json)


@app.command("get")
def get(rollout_id: str, as_json: bool = JsonOption) -> None:
    """Status with per-wave and per-device progress (every device with --json)."""
    view = run(lambda nc: get_all(client(nc), rollout_id), as_json, SERVICE)
    if as_json:
        show(view, as_json)
        return
    show(view, as_json)
    devices = Table()
    id_column(devices, "device")
    devices.add_column("wave")
    devices.add_column("status")
    devices.add_column("reason")
    for d in view.devices[:200]:
        devices.add_row(d.device_id, str(d.wave + 1), d.status, d.reason)  # deferred: why
    out.print(devices)
    if view.devices_total > 200:
        out.print(f"… and {view.devices_total - 200} more device(s) (--json lists them all)")


@app.command("watch")
def watch_(rollout_id: str, timeout: float = typer.Option(3600.0, help="give up after seconds"),
           as_json: bool = JsonOption) -> None:
    """Follow a rollout's waves live until it ends: exit 0 completed, 1 aborted, rolled back or
    cancelled, 124 when TIMEOUT passes first."""
    show_outcome(_watch(rollout_id, as_json, timeout), as_json)


def _simple(name: str, help_text: str) -> None:
    def command(rollout_id: str, reason: str = typer.Option("", help="why (kept in the audit log)"),
                as_json: bool = JsonOption) -> None:
        show(call(name, RolloutRef(rollout_id, reason), RolloutView, as_json), as_json)

    command.__doc__ = help_text
    app.command(name)(command)


_simple("start", "Plan and start a created rollout.")
_simple("pause", "Stop starting new waves (reports are still counted).")
_simple("resume", "Continue a paused rollout; device deadlines are extended by the pause.")
_simple("cancel", "Stop the rollout; devices already updated keep the new version.")
_simple("rollback", "Put every touched device back on its previous version.")


@app.command("activate")
def activate(rollout_id: str,
             device: list[str] = typer.Option(
                 None, "--device", "-d", help="Only this device (repeat); none: every device "
                 "targeted so far."),
             as_json: bool = JsonOption) -> None:
    """Release the hold of a rollout created with --hold: its downloaded devices switch (once
    their gates, if any, hold). Devices targeted later come with the hold again."""
    view = call("activate", ActivateRollout(rollout_id=rollout_id, device_ids=list(device or [])),
                RolloutView, as_json)
    show(view, as_json)


@app.command("list")
def list_(app_name: str = typer.Option(None, "--app", help="Only rollouts of this app."),
          status: RolloutStatus = typer.Option(None, help="Only rollouts in this status."),
          limit: int = typer.Option(50, min=1, help="At most this many."),
          wide: bool = WideOption, as_json: bool = JsonOption) -> None:
    """Recent rollouts, newest first."""
    found = call("list", ListRollouts(app=app_name, status=status.value if status else None, limit=limit),
                 RolloutList, as_json)
    if as_json:
        emit_json({"ok": True, "rollouts": builtins(found.rollouts)})
        return
    widen(wide)
    table = Table()
    id_column(table, "rollout")
    for column in ("app", "version", "status", "devices", "succeeded", "failed", "staged",
                   "deferred", "schedule", "created"):
        table.add_column(column)
    for r in found.rollouts:
        shown = r.status if r.waiting is None else f"{r.status}: {r.waiting.message}"
        table.add_row(r.rollout_id, r.app, r.version, shown, str(r.devices), str(r.succeeded),
                      str(r.failed), str(r.staged), str(r.deferred), schedule_brief(r.schedule),
                      r.created_at.isoformat(timespec="seconds"))
    out.print(table)
