"""The schedule options of `sdv rollout create` and `sdv policy set` (maintenance windows, rate,
max in flight, start time, activation gates, hold, activation timeout): the options themselves,
turning them into a `Schedule` — checked here, so a bad window, gate or rate is a usage error
before anything is sent — and the lines that show a schedule."""

from __future__ import annotations

from datetime import datetime

import typer

from sdv_client.cli_support import EXIT_USAGE, Failure, fail
from sdv_events.errors import DomainError
from sdv_events.schedules import (
    check_schedule,
    merge_label_windows,
    parse_label_window,
    parse_start_at,
)
from sdv_events.schemas.scheduling import (
    DEFAULT_ACTIVATION_TIMEOUT_S,
    Pacing,
    Schedule,
    Waiting,
)

WindowOption = typer.Option(
    None, "--window", help="Maintenance window in which devices are targeted, e.g. "
    "'Mon-Fri 22:00-05:00 Europe/Berlin' or 'daily 02:00-04:00 UTC' (repeat for more).")
LabelWindowOption = typer.Option(
    None, "--label-window", help="Windows for devices with a label, replacing --window for "
    "them: 'zone=eu: Mon-Fri 22:00-05:00 Europe/Berlin' (repeat; a label twice: both windows).")
RateOption = typer.Option(None, "--rate", help="At most this many devices targeted per minute.")
RateGrowthOption = typer.Option(1.0, "--rate-growth",
                                help="The rate of each wave is the previous one's times this.")
MaxRateOption = typer.Option(None, "--max-rate", help="Cap on the growing rate (per minute).")
MaxInFlightOption = typer.Option(
    None, "--max-in-flight", help="At most this many devices targeted and not yet reported.")
StartAtOption = typer.Option(
    None, "--start-at", help="Target no device before this time (ISO-8601 with an offset, "
    "e.g. 2026-12-01T22:00:00+01:00).")
GateOption = typer.Option(
    None, "--gate", help="Activation gate: a vehicle signal condition that must hold before a "
    "device switches, e.g. 'Vehicle.Speed == 0' (repeat: all must hold).")
HoldOption = typer.Option(
    False, "--hold", help="Download now, activate later: devices switch on `sdv rollout activate`.")
ActivationTimeoutOption = typer.Option(
    DEFAULT_ACTIVATION_TIMEOUT_S, "--activation-timeout",
    help="Seconds a downloaded device may wait for its gates or hold before it counts as failed.")


def schedule_of(*, windows: list[str] | None, label_windows: list[str] | None,
                rate: float | None, rate_growth: float, max_rate: float | None,
                max_in_flight: int | None, start_at: str | None, gates: list[str] | None,
                hold: bool, activation_timeout: float, as_json: bool) -> Schedule:
    """The schedule the options describe; else the command ends with a usage error (exit 2,
    code `invalid_request`) naming what is wrong, before anything is sent."""
    try:
        at: datetime | None = parse_start_at(start_at) if start_at else None
        schedule = Schedule(
            windows=[" ".join(w.split()) for w in windows or []],
            label_windows=merge_label_windows(parse_label_window(t) for t in label_windows or []),
            pacing=Pacing(per_minute=rate, growth=rate_growth, max_per_minute=max_rate,
                          max_in_flight=max_in_flight),
            start_at=at, gates=[g.strip() for g in gates or []], hold=hold,
            activation_timeout_s=activation_timeout)
        return check_schedule(schedule)
    except DomainError as refused:
        fail(Failure(refused.message, code=refused.code, exit_code=EXIT_USAGE), as_json)


def _when(at: datetime) -> str:
    return at.isoformat(timespec="minutes")


def rate_text(pacing: Pacing) -> str:
    parts = []
    if pacing.per_minute is not None:
        parts.append(f"{pacing.per_minute:g}/min")
        if pacing.growth != 1.0:
            parts[-1] += f", growing {pacing.growth:g}x per wave"
        if pacing.max_per_minute:
            parts[-1] += f" (at most {pacing.max_per_minute:g}/min)"
    if pacing.max_in_flight is not None:
        parts.append(f"max {pacing.max_in_flight} in flight")
    return ", ".join(parts)


def schedule_lines(schedule: Schedule) -> list[str]:
    """A schedule as an operator reads it, one line per kind of option (none: empty)."""
    lines = []
    if schedule.start_at is not None:
        lines.append(f"start at {_when(schedule.start_at)}")
    if schedule.windows:
        lines.append(f"windows: {'; '.join(schedule.windows)}")
    for entry in schedule.label_windows:
        lines.append(f"windows of {entry.label}: {'; '.join(entry.windows)}")
    if rate := rate_text(schedule.pacing):
        lines.append(f"rate: {rate}")
    if schedule.gates or schedule.hold:
        how = [f"gates {' and '.join(schedule.gates)}"] if schedule.gates else []
        if schedule.hold:
            how.append("hold (download now; switch on `sdv rollout activate`)")
        timeout = schedule.activation_timeout_s
        lines.append(f"activation: {', '.join(how)}; activation timeout {timeout:g} s")
    return lines


def schedule_brief(schedule: Schedule) -> str:
    """One cell of a table: what the schedule has."""
    parts = []
    if schedule.start_at is not None:
        parts.append(f"at {_when(schedule.start_at)}")
    if schedule.windows or schedule.label_windows:
        parts.append(f"{len(schedule.windows) + sum(len(e.windows) for e in schedule.label_windows)}"
                     " window(s)")
    if rate := rate_text(schedule.pacing):
        parts.append(rate)
    if schedule.gates:
        parts.append(f"{len(schedule.gates)} gate(s)")
    if schedule.hold:
        parts.append("hold")
    return ", ".join(parts) or "-"


def waiting_text(waiting: Waiting | None) -> str:
    return "" if waiting is None else waiting.message
