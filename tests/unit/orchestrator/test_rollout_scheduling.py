"""The rollout decider with a schedule (issue 15): maintenance windows (rollout-wide and per
label), start time, rate and max in flight, activation gates and hold, deferral accounting and
the activation deadline, `activate`. Given events → when a command → then events, on an
injected clock; no servers."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sdv_events.decider_testing import Refusal, then, then_events
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceBackOnline,
    DeviceFailed,
    DeviceOffline,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    OfflineOption,
    RolloutCompleted,
    RolloutCreated,
    RolloutView,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
    WaveCompleted,
    WaveStarted,
)
from sdv_events.schemas.scheduling import (
    ActivationRequested,
    Deferral,
    DeviceDeferred,
    DeviceStaged,
    DevicesWindowed,
    LabelWindow,
    Pacing,
    RolloutWaiting,
    Schedule,
)
from sdv_orchestrator.domain.activation import ActivateDevices
from sdv_orchestrator.domain.rollout import rollout_decider
from sdv_orchestrator.domain.rollout_commands import (
    CreateRollout,
    PauseRollout,
    Report,
    ReportDevices,
    ResumeRollout,
    StartRollout,
    Tick,
)
from sdv_orchestrator.domain.rollout_view import view_of

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # a Tuesday, noon UTC
NEW = PackageInfo(name="app", version="2.0.0", digest="2" * 64, size=1, object_name="2" * 64,
                  manifest_digest="m", signature="s", key_id="k", channel="stable", runtime="native",
                  entry_point="main.py", python_version="3.11")
DEVICES = [f"dev-{i:02d}" for i in range(10)]
SPEED = "Vehicle.Speed == 0"


class Run:
    """A history grown command by command (given events → when command → then events); a
    refused command fails the test. `view` is what the read side shows of it."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, command: Any) -> list[Any]:
        new = then_events(rollout_decider, given=self.events, when=command)
        self.events += new
        return new

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def view(self, now: datetime | None = None) -> RolloutView:
        return view_of("r1", rollout_decider.fold(self.events), now=now)


def create(schedule: Schedule, *, now: datetime = T0, waves: tuple[str, ...] = ("100%",),
           device_s: float = 60.0, plan: StartRollout | None = None,
           offline: OfflineOption = "skip") -> CreateRollout:
    return CreateRollout(rollout_id="r1", package=NEW, target=Target(selector="fleet=test"),
                         strategy=Strategy("canary", list(waves)), thresholds=Thresholds(0.5, 0.5),
                         timeouts=Timeouts(device_s, 0), schedule=schedule, now=now, plan=plan,
                         offline=offline)


def started(schedule: Schedule, *, now: datetime = T0, devices: list[str] = DEVICES,
            labels: dict[str, dict[str, str]] | None = None, **options: Any) -> Run:
    """Created and started in one decision, as the service does."""
    run = Run()
    run(create(schedule, now=now, plan=StartRollout(device_ids=list(devices), labels=labels or {},
                                                    now=now), **options))
    return run


def targeted(events: list[Any]) -> list[str]:
    return [e.device_id for e in events if isinstance(e, DeviceTargeted)]


def staged(device_id: str, at: datetime) -> Report:
    return Report(device_id, False, observed_at=at, kind="staged")


def deferred(device_id: str, at: datetime, reason: str = "waiting for Vehicle.Speed == 0: "
             "Vehicle.Speed is 50", held: bool = False) -> Report:
    gate = None if held else SPEED
    return Report(device_id, False, observed_at=at, kind="deferred",
                  deferral=Deferral(reason=reason, gate=gate, signal=None if held else "Vehicle.Speed",
                                    value=None if held else 50.0, held=held))


# --- windows and start time ----------------------------------------------------------------------
def test_a_rollout_created_outside_its_window_targets_nobody_until_the_window_opens() -> None:
    run = started(Schedule(windows=["daily 22:00-23:00 UTC"]))
    opening = T0.replace(hour=22)
    assert not run.of(DeviceTargeted)
    assert run.of(RolloutWaiting) == [RolloutWaiting(reason="window", until=opening, wave=0, at=T0)]
    view = run.view(now=T0)
    assert view.status == "waiting"
    assert view.waiting is not None
    assert view.waiting.until == opening
    assert "next opening 2026-12-01T22:00+00:00" in view.waiting.message
    # Ticks before it opens change nothing (the wait is said once).
    assert run(Tick(T0 + timedelta(hours=3))) == []
    assert run(Tick(opening - timedelta(seconds=1))) == []
    at_opening = run(Tick(opening))
    assert sorted(targeted(at_opening)) == DEVICES
    assert {e.at for e in at_opening if isinstance(e, DeviceTargeted)} == {opening}
    assert run.view(now=opening).status == "running"


def test_a_window_that_closes_mid_wave_makes_the_rollout_wait_for_the_next_opening() -> None:
    opening = T0.replace(hour=22)
    run = started(Schedule(windows=["daily 22:00-22:05 UTC"], pacing=Pacing(per_minute=1)),
                  now=opening)
    times = [opening + timedelta(seconds=30 * i) for i in range(1, 13)]
    for now in times:
        run(Tick(now))
    # One a minute while it is open (22:00 … 22:04), then the wait until tomorrow's opening.
    assert [e.at for e in run.of(DeviceTargeted)] == [opening + timedelta(minutes=m) for m in range(5)]
    assert run.of(RolloutWaiting)[-1].until == opening + timedelta(days=1)


def test_label_windows_target_each_zone_in_its_own_window() -> None:
    eu = {"zone": "eu"}
    labels = {d: eu for d in DEVICES[:4]}
    schedule = Schedule(windows=["daily 12:00-13:00 UTC"],
                        label_windows=[LabelWindow("zone=eu", ["daily 20:00-21:00 UTC"])])
    run = started(schedule, labels=labels)
    (windowed,) = run.of(DevicesWindowed)
    assert sorted(d.device_id for d in windowed.devices) == DEVICES[:4]
    # Noon: the rest of the fleet's window is open, the EU one is not.
    assert sorted(targeted(run.events)) == DEVICES[4:]
    for device_id in DEVICES[4:]:
        run(ReportDevices([Report(device_id, True, observed_at=T0)], T0))
    assert run.of(RolloutWaiting)[-1].until == T0.replace(hour=20)
    assert sorted(targeted(run(Tick(T0.replace(hour=20))))) == DEVICES[:4]


def test_a_rollout_before_its_start_time_waits_and_starts_by_itself() -> None:
    start = T0 + timedelta(hours=1)
    run = started(Schedule(start_at=start))
    assert run.of(RolloutWaiting) == [RolloutWaiting(reason="start_at", until=start, wave=0, at=T0)]
    assert run(Tick(start - timedelta(minutes=1))) == []
    assert sorted(targeted(run(Tick(start)))) == DEVICES


def test_a_paused_rollout_targets_nothing_when_its_window_opens_and_goes_on_when_resumed() -> None:
    opening = T0.replace(hour=22)
    run = started(Schedule(windows=["daily 22:00-23:00 UTC"]))
    run(PauseRollout(T0 + timedelta(hours=1)))
    assert run(Tick(opening)) == []
    resumed = run(ResumeRollout(opening + timedelta(minutes=5)))
    assert sorted(targeted(resumed)) == DEVICES


# --- pacing --------------------------------------------------------------------------------------
def test_a_rate_of_60_a_minute_shows_in_the_targeted_events_times_one_a_second() -> None:
    run = started(Schedule(pacing=Pacing(per_minute=60)))
    now = T0
    while len(run.of(DeviceTargeted)) < len(DEVICES):
        now += timedelta(seconds=0.5)
        run(Tick(now))
    times = [e.at for e in run.of(DeviceTargeted)]
    assert times[0] == T0
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))


def test_the_rate_grows_per_wave() -> None:
    run = started(Schedule(pacing=Pacing(per_minute=60, growth=2.0)), waves=("2", "100%"))
    assert targeted(run.events) == ["dev-00"]
    run(Tick(T0 + timedelta(seconds=1)))
    run(ReportDevices([Report(d, True, observed_at=T0) for d in DEVICES[:2]],
                      T0 + timedelta(seconds=1)))
    second_wave_start = T0 + timedelta(seconds=1)
    now = second_wave_start
    while len(run.of(DeviceTargeted)) < len(DEVICES):
        now += timedelta(seconds=0.25)
        run(Tick(now))
    times = [e.at for e in run.of(DeviceTargeted) if e.wave == 1]
    assert all(b - a == timedelta(seconds=0.5) for a, b in itertools.pairwise(times))  # 120/min


def test_max_in_flight_targets_more_as_devices_report() -> None:
    run = started(Schedule(pacing=Pacing(max_in_flight=3)))
    assert targeted(run.events) == DEVICES[:3]
    assert run(Tick(T0 + timedelta(seconds=1))) == []
    then_ = run(ReportDevices([Report("dev-00", True, observed_at=T0)], T0 + timedelta(seconds=2)))
    assert [type(e) for e in then_] == [DeviceSucceeded, DeviceTargeted]
    assert targeted(then_) == ["dev-03"]


def test_a_restarted_orchestrator_paces_on_from_the_history() -> None:
    live = started(Schedule(pacing=Pacing(per_minute=60)))
    live(Tick(T0 + timedelta(seconds=0.5)))
    folded = rollout_decider.fold(live.events)
    later = Tick(T0 + timedelta(seconds=1))
    assert rollout_decider.decide(later, folded) == live(later)


# --- deferral ------------------------------------------------------------------------------------
def test_a_deferred_device_is_not_failed_by_the_device_timeout_but_by_the_activation_deadline() -> None:
    schedule = Schedule(gates=[SPEED], activation_timeout_s=3600)
    run = started(schedule, devices=["dev-00"])
    staged_at = T0 + timedelta(seconds=10)
    got = run(ReportDevices([staged("dev-00", staged_at), deferred("dev-00", staged_at)], staged_at))
    assert [type(e) for e in got] == [DeviceStaged, DeviceDeferred]
    assert got[0].deadline == staged_at + timedelta(hours=1)
    assert run(Tick(T0 + timedelta(seconds=120))) == []  # the device timeout (60 s) passed
    view = run.view()
    assert (view.staged_total, view.deferred_total, view.failed_total) == (1, 1, 0)
    assert view.deferred_by == {SPEED: 1}
    (device,) = view.devices
    assert device.status == "deferred"
    assert device.deferral is not None
    assert device.reason == "waiting for Vehicle.Speed == 0: Vehicle.Speed is 50"
    assert run(Tick(staged_at + timedelta(seconds=3599))) == []
    failed = run(Tick(staged_at + timedelta(seconds=3600)))
    assert isinstance(failed[0], DeviceFailed)
    assert failed[0].reason == ("not activated by its activation deadline (1 h after it was staged); "
                                "last deferral: waiting for Vehicle.Speed == 0: Vehicle.Speed is 50")


def test_a_staged_device_that_then_reports_healthy_succeeds() -> None:
    run = started(Schedule(gates=[SPEED]), devices=["dev-00"])
    run(ReportDevices([staged("dev-00", T0)], T0))
    done = run(ReportDevices([Report("dev-00", True, observed_at=T0 + timedelta(hours=2))],
                             T0 + timedelta(hours=2)))
    assert [type(e) for e in done] == [DeviceSucceeded, WaveCompleted, RolloutCompleted]


def test_a_deferral_is_recorded_when_its_reason_changes_only() -> None:
    run = started(Schedule(gates=[SPEED]), devices=["dev-00"])
    first = run(ReportDevices([deferred("dev-00", T0)], T0))
    assert [type(e) for e in first] == [DeviceStaged, DeviceDeferred]  # a deferral implies staging
    assert run(ReportDevices([deferred("dev-00", T0)], T0)) == []
    changed = run(ReportDevices([deferred("dev-00", T0, reason="waiting for Vehicle.Speed == 0: "
                                          "no value yet")], T0))
    assert [type(e) for e in changed] == [DeviceDeferred]


def test_staging_reported_after_the_device_deadline_is_a_timeout() -> None:
    run = started(Schedule(gates=[SPEED]), devices=["dev-00"])
    late = T0 + timedelta(seconds=61)
    assert next(type(e) for e in run(ReportDevices([staged("dev-00", late)], late))) is DeviceTimedOut


def test_a_staged_device_offline_at_its_activation_deadline_is_skipped_as_the_option_says() -> None:
    run = started(Schedule(gates=[SPEED], activation_timeout_s=600), devices=["dev-00", "dev-01"])
    run(ReportDevices([staged("dev-00", T0)], T0))
    run(ReportDevices([Report("dev-01", True, observed_at=T0)], T0))
    due = run(Tick(T0 + timedelta(seconds=600), presence={"dev-00": False}))
    assert isinstance(due[0], DeviceOffline)
    assert due[0].outcome == "skipped"


def test_a_staged_device_waited_for_offline_waits_for_its_switch_again_once_back() -> None:
    run = started(Schedule(gates=[SPEED], activation_timeout_s=600), devices=["dev-00"],
                  offline="wait")
    run(ReportDevices([deferred("dev-00", T0)], T0))
    due = T0 + timedelta(seconds=600)
    assert run(Tick(due, presence={"dev-00": False}))[0].outcome == "waiting"
    back = T0 + timedelta(hours=1)
    (online,) = run(Tick(back, presence={"dev-00": True}))
    assert online == DeviceBackOnline("dev-00", 0, back + timedelta(seconds=600))
    assert run.view().devices[0].status == "deferred"
    assert run(Tick(back + timedelta(seconds=120))) == []  # not the device timeout (60 s)


# --- activate ------------------------------------------------------------------------------------
def test_activate_releases_the_hold_of_the_named_devices_or_of_every_targeted_one() -> None:
    run = started(Schedule(hold=True), devices=DEVICES[:3])
    run(ReportDevices([deferred("dev-00", T0, reason="held until activated", held=True)], T0))
    one = run(ActivateDevices(device_ids=["dev-00"], now=T0, actor="operator:ann"))
    assert one == [ActivationRequested(device_ids=["dev-00"], devices=1, by="operator:ann", at=T0)]
    assert run(ActivateDevices(device_ids=["dev-00"], now=T0)) == []  # already released
    rest = run(ActivateDevices(now=T0))
    assert rest == [ActivationRequested(all=True, devices=2, at=T0)]
    assert run.view().activated_total == 3


def test_activate_is_refused_for_a_stranger_a_device_not_targeted_yet_or_a_rollout_without_hold() -> None:
    held = started(Schedule(hold=True), waves=("1", "100%"))
    given = held.events
    assert then(rollout_decider, given=given, when=ActivateDevices(device_ids=["nope"], now=T0)) \
        == Refusal("invalid_request", "not in rollout r1: nope")
    refusal = then(rollout_decider, given=given, when=ActivateDevices(device_ids=["dev-05"], now=T0))
    assert isinstance(refusal, Refusal)
    assert refusal.code == "conflict"
    assert "not targeted yet (planned in wave 2)" in refusal.message
    free = started(Schedule(gates=[SPEED]))
    refusal = then(rollout_decider, given=free.events, when=ActivateDevices(now=T0))
    assert isinstance(refusal, Refusal)
    assert refusal.code == "conflict"
    assert "created without --hold" in refusal.message
    assert then(rollout_decider, given=[], when=ActivateDevices(now=T0)) \
        == Refusal("not_found", "no such rollout")


# --- invalid options -----------------------------------------------------------------------------
@pytest.mark.parametrize(("schedule", "says"), [
    (Schedule(windows=["Mon-Fri 22:00-05:00 Mars/Olympus"]), "not an IANA time zone"),
    (Schedule(windows=["weekdays 22:00-05:00 UTC"]), "is not a day"),
    (Schedule(label_windows=[LabelWindow("zone", ["daily 01:00-02:00 UTC"])]), "key=value"),
    (Schedule(gates=["Vehicle.Speed = 0"]), "activation gate"),
    (Schedule(gates=["Vehicle.Speed < fast"]), "not a number"),
    (Schedule(pacing=Pacing(per_minute=0)), "rate must be between"),
    (Schedule(pacing=Pacing(max_in_flight=0)), "max in flight"),
    (Schedule(activation_timeout_s=0), "activation timeout"),
    (Schedule(start_at=datetime(2026, 12, 1, 12, 0)), "time zone offset"),
])
def test_invalid_schedule_options_are_refused_and_nothing_is_stored(schedule: Schedule, says: str) -> None:
    refusal = then(rollout_decider, given=[], when=create(schedule))
    assert isinstance(refusal, Refusal), refusal
    assert refusal.code == "invalid_request"
    assert says in refusal.message


def test_a_rollout_without_schedule_targets_its_wave_at_once_as_before() -> None:
    run = started(Schedule(), waves=("2", "100%"))
    assert [type(e) for e in run.events if isinstance(e, WaveStarted | DeviceTargeted)] \
        == [WaveStarted, DeviceTargeted, DeviceTargeted]
    assert not run.of(RolloutWaiting)
    created = run.of(RolloutCreated)[0]
    assert created.schedule == Schedule()
