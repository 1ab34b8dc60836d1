"""`sdv policy …`: set, list, delete — policies start rollouts on their own when a version lands
on a channel, with every rollout option (strategy, thresholds, timeouts, offline devices and the
schedule: windows, rate, start time, gates, hold)."""

from __future__ import annotations

import typer
from rich.table import Table

from sdv_client.cli_support import JsonOption, builtins, emit_json, out
from sdv_client.rollout_cli import OfflineChoice, StrategyKind, call
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
from sdv_events.schemas.rollouts import (
    ListRollouts,
    PolicyList,
    PolicyRef,
    RolloutPolicy,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
)

policy_app = typer.Typer(help="Policies: start rollouts on their own when a version lands on a "
                         "channel; give new devices the fleet's version.", no_args_is_help=True)


@policy_app.command("set")
def policy_set(
    name: str, app_name: str = typer.Option(..., "--app", help="The app the policy rolls out."),
    channel: str = typer.Option("stable", help="dev | beta | stable"),
    selector: str = typer.Option(..., "--selector", "-l", help="The devices: a label selector."),
    strategy: StrategyKind = typer.Option(StrategyKind.canary, "--strategy", help="How devices are batched."),
    waves: str = typer.Option("1,10%,50%,100%", help="Canary: cumulative wave sizes."),
    batch_size: int = typer.Option(10, help="rolling: devices per batch"),
    success: float = typer.Option(0.95, help="share of a wave that must succeed to advance"),
    error: float = typer.Option(0.05, help="share of a wave whose failure aborts the rollout"),
    device_timeout: float = typer.Option(600.0, help="seconds a device may take to report"),
    soak: float = typer.Option(0.0, help="seconds to wait between waves"),
    offline: OfflineChoice = typer.Option(
        OfflineChoice.skip, "--offline", help="a device offline at its deadline: skip, wait or fail"),
    no_rollback: bool = typer.Option(False, "--no-rollback", help="on abort, leave devices as they are"),
    auto_assign: bool = typer.Option(True, help="give newly accepted devices the fleet's version"),
    window: list[str] = WindowOption, label_window: list[str] = LabelWindowOption,
    rate: float = RateOption, rate_growth: float = RateGrowthOption, max_rate: float = MaxRateOption,
    max_in_flight: int = MaxInFlightOption, start_at: str = StartAtOption,
    gate: list[str] = GateOption, hold: bool = HoldOption,
    activation_timeout: float = ActivationTimeoutOption,
    as_json: bool = JsonOption,
) -> None:
    """Roll APP out to SELECTOR whenever a version lands on CHANNEL, with these rollout options."""
    schedule = schedule_of(windows=window, label_windows=label_window, rate=rate,
                           rate_growth=rate_growth, max_rate=max_rate, max_in_flight=max_in_flight,
                           start_at=start_at, gates=gate, hold=hold,
                           activation_timeout=activation_timeout, as_json=as_json)
    policy = RolloutPolicy(name=name, app=app_name, channel=channel,  # type: ignore[arg-type]
                           target=Target(selector=selector),
                           strategy=Strategy(kind=strategy.value,
                                             waves=[w.strip() for w in waves.split(",")],
                                             batch_size=batch_size),
                           thresholds=Thresholds(success, error),
                           timeouts=Timeouts(device_timeout, soak), auto_rollback=not no_rollback,
                           auto_assign=auto_assign, offline=offline.value, schedule=schedule)
    saved = call("set_policy", policy, RolloutPolicy, as_json)
    if as_json:
        emit_json({"ok": True, "policy": builtins(saved)})
    else:
        out.print(f"policy {saved.name}: {saved.app} on {saved.channel} → {saved.target.selector}")
        for line in schedule_lines(saved.schedule):
            out.print(f"  {line}", highlight=False)


@policy_app.command("list")
def policy_list(as_json: bool = JsonOption) -> None:
    """Every rollout policy: app, channel, target, waves."""
    found = call("list_policies", ListRollouts(), PolicyList, as_json)
    if as_json:
        emit_json({"ok": True, "policies": builtins(found.policies)})
        return
    table = Table("policy", "app", "channel", "target", "waves", "thresholds", "timeouts", "offline",
                  "schedule", "auto-assign", "enabled")
    for p in found.policies:
        table.add_row(p.name, p.app, p.channel, p.target.selector or ",".join(p.target.device_ids or []),
                      ",".join(p.strategy.waves),
                      f"ok ≥{p.thresholds.success:.0%}, abort >{p.thresholds.error:.0%}",
                      f"device {p.timeouts.device_s:g} s, soak {p.timeouts.soak_s:g} s", p.offline,
                      schedule_brief(p.schedule), str(p.auto_assign), str(p.enabled))
    out.print(table)


@policy_app.command("delete")
def policy_delete(name: str, as_json: bool = JsonOption) -> None:
    """Delete a policy: no more rollouts start on their own for it."""
    call("delete_policy", PolicyRef(name), PolicyRef, as_json)
    if as_json:
        emit_json({"ok": True, "deleted": name})
    else:
        out.print(f"policy {name} deleted")
