"""The rollout decider: given events → when a command → then events (or a typed refusal), plus
a property over random report sequences. Only the decider's decisions are checked, never its
state: what no event shows is checked through the next command's decision. No servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdv_events.decider_testing import Refusal, then, then_events
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceFailed,
    DeviceRolledBack,
    DevicesExcluded,
    DevicesPlanned,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    ExcludedDevice,
    PlannedDevice,
    PreviousPackages,
    RollbackCompleted,
    RollbackStarted,
    RolloutAborted,
    RolloutCancelled,
    RolloutCompleted,
    RolloutCreated,
    RolloutPaused,
    RolloutPlanned,
    RolloutResumed,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
    WaveCompleted,
    WaveStarted,
)
from sdv_orchestrator.domain.rollout import RolloutEvent, rollout_decider
from sdv_orchestrator.domain.rollout_commands import (
    CancelRollout,
    CreateRollout,
    PauseRollout,
    Report,
    ReportDevices,
    ResumeRollout,
    RollbackRollout,
    RolloutCommand,
    StartRollout,
    Tick,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NEW = PackageInfo(name="app", version="2.0.0", digest="2" * 64, size=1, object_name="2" * 64,
                  manifest_digest="m", signature="s", key_id="k", channel="stable", runtime="native",
                  entry_point="main.py", python_version="3.11")
OLD = PackageInfo(name="app", version="1.0.0", digest="1" * 64, size=1, object_name="1" * 64,
                  manifest_digest="m", signature="s", key_id="k", channel="stable", runtime="native",
                  entry_point="main.py", python_version="3.11")
DEVICES = [f"dev-{i:02d}" for i in range(20)]
# The canary plan ("1", "25%", "100%") of DEVICES, in the order given.
CANARY, SECOND, THIRD = DEVICES[:1], DEVICES[1:5], DEVICES[5:]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def created(*, waves: Sequence[str] = ("1", "25%", "100%"), thresholds: Thresholds = Thresholds(0.95, 0.05),
            timeouts: Timeouts = Timeouts(60, 0), auto_rollback: bool = True,
            target: Target = Target(selector="env=test")) -> RolloutCreated:
    return RolloutCreated(rollout_id="r1", package=NEW, target=target,
                          strategy=Strategy("canary", list(waves)), thresholds=thresholds,
                          timeouts=timeouts, auto_rollback=auto_rollback, created_at=T0)


def start(devices: Sequence[str] = DEVICES) -> StartRollout:
    """Every device ran OLD before; `dev-x` cannot take the package."""
    return StartRollout(device_ids=list(devices), excluded={"dev-x": "no KUKSA databroker"},
                        previous_packages=[OLD], previous=dict.fromkeys(devices, 0), now=T0)


def decided(given: Sequence[RolloutEvent], when: RolloutCommand) -> list[RolloutEvent]:
    """The events `when` decides after `given`; a refusal fails the test."""
    return then_events(rollout_decider, given=given, when=when)


def started(*, devices: Sequence[str] = DEVICES, **options: object) -> list[RolloutEvent]:
    """The history of a rollout created (with `options`) and started over `devices`."""
    history: list[RolloutEvent] = [created(**options)]  # type: ignore[arg-type]
    return history + decided(history, start(devices))


def targeted(devices: Iterable[str], wave: int, at: datetime = T0,
             device_s: float = 60) -> list[RolloutEvent]:
    return [DeviceTargeted(d, wave, at + timedelta(seconds=device_s), at) for d in devices]


def succeeded(devices: Iterable[str], wave: int) -> list[RolloutEvent]:
    return [DeviceSucceeded(d, wave) for d in devices]


def ok(devices: Iterable[str], now: datetime = T0) -> ReportDevices:
    return ReportDevices([Report(d, True) for d in devices], now)


def back_on(devices: Iterable[str], package: PackageInfo = OLD) -> ReportDevices:
    """Each device reports it runs `package` again, healthy."""
    return ReportDevices([Report(d, True, digest=package.digest) for d in devices], T0)


def over_error(wave: int, failed: int, counted: int, error: str = "5%") -> str:
    return f"wave {wave}: {failed} of {counted} devices failed, more than the {error} error threshold"


def test_canary_where_all_succeed_completes_wave_by_wave() -> None:
    given: list[RolloutEvent] = [created()]
    plan = decided(given, start())
    assert plan == [
        RolloutPlanned(devices=20, waves=3, excluded=1, previous_packages=1, planned_at=T0),
        PreviousPackages(0, [OLD]),
        DevicesPlanned(0, [PlannedDevice(d, wave, 0)
                           for wave, devices in enumerate((CANARY, SECOND, THIRD)) for d in devices]),
        DevicesExcluded(0, [ExcludedDevice("dev-x", "no KUKSA databroker")]),
        WaveStarted(0, 1, T0), *targeted(CANARY, 0),  # the canary alone
    ]
    given += plan
    first = decided(given, ok(CANARY))
    assert first == [*succeeded(CANARY, 0), WaveCompleted(0, 1, 0, T0),
                     WaveStarted(1, 4, T0), *targeted(SECOND, 1)]
    given += first
    second = decided(given, ok(SECOND))
    assert second == [*succeeded(SECOND, 1), WaveCompleted(1, 4, 0, T0),
                      WaveStarted(2, 15, T0), *targeted(THIRD, 2)]
    given += second
    assert then(rollout_decider, given=given, when=ok(THIRD)) \
        == [*succeeded(THIRD, 2), WaveCompleted(2, 15, 0, T0), RolloutCompleted(20, 0, T0)]
    given += [*succeeded(THIRD, 2), WaveCompleted(2, 15, 0, T0), RolloutCompleted(20, 0, T0)]
    # Completed: it can no longer be paused, and every device was targeted exactly once.
    assert then(rollout_decider, given=given, when=PauseRollout(T0)) \
        == Refusal("conflict", "cannot pause a rollout that is completed")
    assert sorted(e.device_id for e in given if isinstance(e, DeviceTargeted)) == DEVICES


def test_failures_above_the_error_threshold_in_wave_2_abort_and_roll_back_waves_1_and_2() -> None:
    given = started(thresholds=Thresholds(0.75, 0.25))
    given += decided(given, ok(CANARY))
    crash = ReportDevices([Report(SECOND[0], False, "crash loop")], T0)
    assert then(rollout_decider, given=given, when=crash) \
        == [DeviceFailed(SECOND[0], 1, "crash loop")]  # 1 of 4 = 25%: not more than the threshold
    given += [DeviceFailed(SECOND[0], 1, "crash loop")]
    unhealthy = ReportDevices([Report(SECOND[1], False, "health check failed")], T0)
    reason = over_error(2, 2, 4, "25%")
    assert then(rollout_decider, given=given, when=unhealthy) == [
        DeviceFailed(SECOND[1], 1, "health check failed"),
        RolloutAborted(reason, 1, T0),
        RollbackStarted(reason, T0, 5),  # the canary and wave 2; wave 3 was never targeted
    ]
    assert not set(THIRD) & {e.device_id for e in given if isinstance(e, DeviceTargeted)}
    given += [DeviceFailed(SECOND[1], 1, "health check failed"), RolloutAborted(reason, 1, T0),
              RollbackStarted(reason, T0, 5)]
    # Late reports of the new version change nothing; an untouched device is not followed.
    assert then(rollout_decider, given=given, when=ok(SECOND[2:3])) == []
    assert then(rollout_decider, given=given, when=back_on(THIRD)) == []
    # Every touched device goes back to the package it ran before (OLD), and only those.
    touched = CANARY + SECOND
    assert then(rollout_decider, given=given, when=back_on(touched)) == [
        *(DeviceRolledBack(d, 0 if d in CANARY else 1) for d in touched),
        RollbackCompleted(5, 0, T0),
    ]


def test_no_report_within_the_device_timeout_counts_as_failure() -> None:
    given = started(timeouts=Timeouts(device_s=30))
    assert then(rollout_decider, given=given, when=Tick(at(29))) == []
    reason = over_error(1, 1, 1)  # 1 of 1 in the canary wave
    assert then(rollout_decider, given=given, when=Tick(at(31))) == [
        DeviceTimedOut(CANARY[0], 0), RolloutAborted(reason, 0, at(31)), RollbackStarted(reason, at(31), 1),
    ]


def test_pause_holds_the_next_wave_and_resume_starts_it_with_deadlines_shifted() -> None:
    given = started(timeouts=Timeouts(device_s=30))
    assert then(rollout_decider, given=given, when=PauseRollout(T0, "investigating")) \
        == [RolloutPaused(T0, "investigating")]
    given += [RolloutPaused(T0, "investigating")]
    assert then(rollout_decider, given=given, when=PauseRollout(T0)) == []  # idempotent
    # Nothing times out while paused: the canary's deadline (T0 + 30 s) passes unjudged.
    assert then(rollout_decider, given=given, when=Tick(at(3600))) == []
    # Resumed an hour later, the canary has its 30 s again: judged by T0 + 1 h + 30 s.
    resumed = decided(given, ResumeRollout(at(3600)))
    assert resumed == [RolloutResumed(at(3600), 3600)]
    assert then(rollout_decider, given=given + resumed, when=Tick(at(3629))) == []
    assert [type(e) for e in decided(given + resumed, Tick(at(3631)))] \
        == [DeviceTimedOut, RolloutAborted, RollbackStarted]
    # A wave that completes while paused: no WaveStarted until resumed.
    done = decided(given, ok(CANARY, at(5)))
    assert done == [*succeeded(CANARY, 0), WaveCompleted(0, 1, 0, at(5))]
    given += done
    assert then(rollout_decider, given=given, when=Tick(at(3600))) == []
    assert then(rollout_decider, given=given, when=ResumeRollout(at(3600))) == [
        RolloutResumed(at(3600), 3600), WaveStarted(1, 4, at(3600)),
        *targeted(SECOND, 1, at(3600), device_s=30),
    ]


def test_soak_time_delays_the_next_wave() -> None:
    given = started(timeouts=Timeouts(device_s=600, soak_s=120))
    done = decided(given, ok(CANARY))
    assert done == [*succeeded(CANARY, 0), WaveCompleted(0, 1, 0, T0)]  # no WaveStarted yet
    given += done
    assert then(rollout_decider, given=given, when=Tick(at(119))) == []
    assert then(rollout_decider, given=given, when=Tick(at(120))) \
        == [WaveStarted(1, 4, at(120)), *targeted(SECOND, 1, at(120), device_s=600)]


def test_success_threshold_not_met_aborts_even_under_the_error_threshold() -> None:
    devices = [f"d{i}" for i in range(10)]
    given = started(waves=("100%",), thresholds=Thresholds(1.0, 0.2), devices=devices)
    reports = ReportDevices([Report("d0", False, "x")] + [Report(d, True) for d in devices[1:]], T0)
    reason = "wave 1: 9 of 10 devices succeeded, less than the 100% success threshold"
    assert then(rollout_decider, given=given, when=reports) == [  # 1 of 10 failed: under 20%
        DeviceFailed("d0", 0, "x"), *succeeded(devices[1:], 0),
        RolloutAborted(reason, 0, T0), RollbackStarted(reason, T0, 10),
    ]


def test_cancel_stops_targeting_but_keeps_what_was_deployed() -> None:
    given = started()
    assert then(rollout_decider, given=given, when=CancelRollout(T0)) \
        == [RolloutCancelled("cancelled by operator", T0)]  # no rollback
    given += [RolloutCancelled("cancelled by operator", T0)]
    assert then(rollout_decider, given=given, when=CancelRollout(T0)) == []  # idempotent
    assert then(rollout_decider, given=given, when=ok(CANARY)) == []  # no next wave
    assert then(rollout_decider, given=given, when=PauseRollout(T0)) \
        == Refusal("conflict", "cannot pause a rollout that is cancelled")


def test_manual_rollback_of_a_completed_rollout_restores_every_device() -> None:
    given = started(waves=("100%",))
    given += decided(given, ok(DEVICES))
    assert isinstance(given[-1], RolloutCompleted)
    rollback = decided(given, RollbackRollout(T0, "regression found in the field"))
    assert rollback == [RollbackStarted("regression found in the field", T0, 20)]
    given += rollback
    assert then(rollout_decider, given=given, when=RollbackRollout(T0)) == []  # idempotent
    assert then(rollout_decider, given=given, when=back_on(DEVICES)) \
        == [*(DeviceRolledBack(d, 0) for d in DEVICES), RollbackCompleted(20, 0, T0)]


def test_without_auto_rollback_an_abort_leaves_devices_alone() -> None:
    given = started(auto_rollback=False, thresholds=Thresholds(0.95, 0.05))
    failed = ReportDevices([Report(CANARY[0], False, "x")], T0)
    aborted = decided(given, failed)
    assert aborted == [DeviceFailed(CANARY[0], 0, "x"), RolloutAborted(over_error(1, 1, 1), 0, T0)]
    given += aborted
    assert then(rollout_decider, given=given, when=PauseRollout(T0)) \
        == Refusal("conflict", "cannot pause a rollout that is aborted")
    assert then(rollout_decider, given=given, when=back_on(CANARY)) == []  # nobody followed back


def test_duplicate_and_unknown_reports_change_nothing() -> None:
    given = started()
    first = CANARY[0]
    twice = decided(given, ok([first, first]))
    assert twice == [DeviceSucceeded(first, 0), WaveCompleted(0, 1, 0, T0),
                     WaveStarted(1, 4, T0), *targeted(SECOND, 1)]  # counted once
    assert then(rollout_decider, given=given + twice, when=ok([first, "stranger"])) == []


@pytest.mark.parametrize("thresholds", [Thresholds(1.2, 0.0), Thresholds(0.9, 1.0)])
def test_inconsistent_thresholds_are_refused(thresholds: Thresholds) -> None:
    create = CreateRollout(rollout_id="r", package=NEW, target=Target(selector="a=b"),
                           thresholds=thresholds, now=T0)
    assert then(rollout_decider, given=[], when=create) \
        == Refusal("invalid_request", "thresholds: success must be in (0, 1] and error in [0, 1)")


def test_start_with_no_eligible_device_is_refused_and_start_is_idempotent() -> None:
    given: list[RolloutEvent] = [created(waves=("100%",), target=Target(device_ids=["a"]))]
    nobody = StartRollout(device_ids=[], excluded={"a": "no KUKSA databroker"}, now=T0)
    assert then(rollout_decider, given=given, when=nobody) \
        == Refusal("no_devices", "no eligible device for the target (1 excluded)")
    given += decided(given, StartRollout(device_ids=["a"], now=T0))
    assert given[1:] == [RolloutPlanned(devices=1, waves=1, planned_at=T0),
                         DevicesPlanned(0, [PlannedDevice("a", 0)]), WaveStarted(0, 1, T0),
                         *targeted(["a"], 0)]
    assert then(rollout_decider, given=given, when=StartRollout(device_ids=["a", "b"], now=T0)) == []


# --- properties ---------------------------------------------------------------------------------
report_steps = st.lists(
    st.one_of(
        st.tuples(st.just("report"), st.lists(st.tuples(st.integers(0, 24), st.booleans()), max_size=6)),
        st.tuples(st.just("tick"), st.integers(0, 200)),
        st.tuples(st.just("pause"), st.just(0)),
        st.tuples(st.just("resume"), st.just(0)),
    ),
    max_size=60,
)


def wave_counts(history: Sequence[RolloutEvent]) -> dict[int, tuple[int, int, int]]:
    """Wave → (planned size, succeeded, failed), as the history says."""
    sizes: dict[int, int] = {}
    for e in history:
        if isinstance(e, DevicesPlanned):
            for d in e.devices:
                sizes[d.wave] = sizes.get(d.wave, 0) + 1
    return {
        wave: (size,
               sum(isinstance(e, DeviceSucceeded) and e.wave == wave for e in history),
               sum(isinstance(e, DeviceFailed | DeviceTimedOut) and e.wave == wave for e in history))
        for wave, size in sizes.items()
    }


@settings(max_examples=300, deadline=None)
@given(
    steps=report_steps,
    n=st.integers(1, 20),
    error=st.sampled_from([0.0, 0.05, 0.2, 0.5]),
    waves=st.sampled_from([("1", "10%", "100%"), ("100%",), ("2", "50%")]),
)
def test_random_report_sequences_never_exceed_thresholds_silently(
    steps: list[tuple[str, object]], n: int, error: float, waves: tuple[str, ...],
) -> None:
    devices = [f"d{i}" for i in range(n)]
    history = started(waves=waves, thresholds=Thresholds(1 - error, error), timeouts=Timeouts(60, 0),
                      devices=devices)
    clock = T0
    for kind, arg in steps:
        command: RolloutCommand
        if kind == "report":
            command = ReportDevices([Report(f"d{i}", ok) for i, ok in arg], clock)  # type: ignore[attr-defined]
        elif kind == "tick":
            clock += timedelta(seconds=arg)  # type: ignore[arg-type]
            command = Tick(clock)
        else:
            command = PauseRollout(clock) if kind == "pause" else ResumeRollout(clock)
        new = then(rollout_decider, given=history, when=command)
        if isinstance(new, Refusal):  # pause or resume of a rollout that has ended
            assert new.code == "conflict", new
            continue
        history += new
        # Invariants after every decision:
        targeted = [e.device_id for e in history if isinstance(e, DeviceTargeted)]
        assert len(targeted) == len(set(targeted)), "a device was targeted twice"
        aborted_at = next((i for i, e in enumerate(history) if isinstance(e, RolloutAborted)), None)
        for size, _, failed in wave_counts(history).values():
            if failed / size > error:
                assert aborted_at is not None, "threshold exceeded silently"
        if aborted_at is not None:
            assert not any(isinstance(e, WaveStarted | DeviceTargeted)
                           for e in history[aborted_at:]), "work started after an abort"
    if any(isinstance(e, RolloutCompleted) for e in history):
        assert sorted(e.device_id for e in history if isinstance(e, DeviceTargeted)) == sorted(devices)
        for size, ok_count, _ in wave_counts(history).values():
            assert ok_count / size >= 1 - error
    outcomes = [e for e in history if isinstance(e, DeviceSucceeded | DeviceFailed | DeviceTimedOut)]
    assert len({e.device_id for e in outcomes}) == len(outcomes), "a device was counted twice"


def test_a_decision_on_a_device_records_the_fact_it_rests_on() -> None:
    """Device facts live only on the bus; the rollout's own events name the fact and when the
    device observed it, so its history stands from PostgreSQL alone."""
    given = started()
    [canary] = CANARY
    fact_id, observed = uuid.uuid4(), at(-3)
    new = decided(given, ReportDevices([Report(canary, True, "", fact_id, observed)], T0))
    assert new[0] == DeviceSucceeded(canary, 0, fact_id, observed)
    given += new
    failed_id = uuid.uuid4()
    report = Report(SECOND[0], False, "install: bad signature", failed_id, T0)
    assert decided(given, ReportDevices([report], T0))[0] \
        == DeviceFailed(SECOND[0], 1, "install: bad signature", failed_id, T0)
