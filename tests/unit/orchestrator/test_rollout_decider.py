"""The rollout decider: given events / when command / then events, plus properties over random
report sequences. No servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdv_events.errors import DomainError
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceFailed,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    RollbackStarted,
    RolloutAborted,
    RolloutCompleted,
    RolloutResumed,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
    WaveCompleted,
    WaveStarted,
)
from sdv_orchestrator.domain.rollout import rollout_decider
from sdv_orchestrator.domain.rollout_commands import (
    CancelRollout,
    CreateRollout,
    PauseRollout,
    Report,
    ReportDevices,
    ResumeRollout,
    RollbackRollout,
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


class Run:
    """Feeds commands through decide + evolve, like the runner, keeping every event."""

    def __init__(self) -> None:
        self.state = rollout_decider.empty()
        self.events: list[object] = []

    def __call__(self, command: object) -> list[object]:
        new = list(rollout_decider.decide(command, self.state))  # type: ignore[arg-type]
        for event in new:
            self.state = rollout_decider.evolve(self.state, event)  # type: ignore[arg-type]
        self.events += new
        return new

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def started(*, waves=("1", "25%", "100%"), thresholds=Thresholds(0.95, 0.05),
            timeouts=Timeouts(60, 0), devices=DEVICES, auto_rollback=True) -> Run:
    run = Run()
    run(CreateRollout(rollout_id="r1", package=NEW, target=Target(selector="env=test"),
                      strategy=Strategy("canary", list(waves)), thresholds=thresholds,
                      timeouts=timeouts, auto_rollback=auto_rollback, now=T0))
    run(StartRollout(device_ids=list(devices), excluded={"dev-x": "no KUKSA databroker"},
                     previous_packages=[OLD], previous=dict.fromkeys(devices, 0), now=T0))
    return run


def wave_devices(run: Run, index: int) -> list[str]:
    return run.state.waves[index]


def succeed(run: Run, devices, at=T0) -> list[object]:
    return run(ReportDevices([Report(d, True) for d in devices], at))


def test_canary_where_all_succeed_completes_wave_by_wave() -> None:
    run = started()
    assert [len(w) for w in run.state.waves] == [1, 4, 15]
    assert len(run.of(DeviceTargeted)) == 1
    for index in range(3):
        succeed(run, wave_devices(run, index))
    assert [w.wave for w in run.of(WaveCompleted)] == [0, 1, 2]
    assert run.of(RolloutCompleted) == [RolloutCompleted(20, 0, T0)]
    assert run.state.status == "completed"
    assert sorted(e.device_id for e in run.of(DeviceTargeted)) == DEVICES


def test_failures_above_the_error_threshold_in_wave_2_abort_and_roll_back_waves_1_and_2() -> None:
    run = started(thresholds=Thresholds(0.75, 0.25))
    succeed(run, wave_devices(run, 0))
    second = wave_devices(run, 1)
    run(ReportDevices([Report(second[0], False, "crash loop")], T0))
    assert run.state.status == "running"  # 1 of 4 = 25%: not more than the threshold
    new = run(ReportDevices([Report(second[1], False, "health check failed")], T0))
    assert isinstance(new[-2], RolloutAborted)
    assert "2 of 4 devices failed" in new[-2].reason
    rollback = new[-1]
    assert isinstance(rollback, RollbackStarted)
    touched = sorted(wave_devices(run, 0) + second)
    assert rollback.devices == len(touched) == len(run.state.devices)
    assert sorted(run.state.devices) == touched
    assert all(run.state.previous_packages[run.state.previous[d]] == OLD for d in touched)
    third = set(wave_devices(run, 2))
    assert not third & {e.device_id for e in run.of(DeviceTargeted)}  # wave 3 never touched
    assert run(ReportDevices([Report(second[2], True)], T0)) == []  # late reports change nothing


def test_no_report_within_the_device_timeout_counts_as_failure() -> None:
    run = started(timeouts=Timeouts(device_s=30))
    assert run(Tick(T0 + timedelta(seconds=29))) == []
    new = run(Tick(T0 + timedelta(seconds=31)))
    assert isinstance(new[0], DeviceTimedOut)
    assert isinstance(new[1], RolloutAborted)  # 1 of 1 in the canary wave


def test_pause_holds_the_next_wave_and_resume_starts_it_with_deadlines_shifted() -> None:
    run = started(timeouts=Timeouts(device_s=30))
    run(PauseRollout(T0, "investigating"))
    assert run(PauseRollout(T0)) == []  # idempotent
    new = succeed(run, wave_devices(run, 0), T0 + timedelta(seconds=5))
    assert [type(e) for e in new] == [DeviceSucceeded, WaveCompleted]  # no WaveStarted while paused
    assert run(Tick(T0 + timedelta(hours=1))) == []  # nothing times out while paused
    resumed = run(ResumeRollout(T0 + timedelta(hours=1)))
    assert isinstance(resumed[0], RolloutResumed)
    assert resumed[0].paused_for_s == 3600
    assert isinstance(resumed[1], WaveStarted)
    assert resumed[1].wave == 1


def test_soak_time_delays_the_next_wave() -> None:
    run = started(timeouts=Timeouts(device_s=600, soak_s=120))
    assert [type(e) for e in succeed(run, wave_devices(run, 0))] == [DeviceSucceeded, WaveCompleted]
    assert run(Tick(T0 + timedelta(seconds=119))) == []
    assert isinstance(run(Tick(T0 + timedelta(seconds=120)))[0], WaveStarted)


def test_success_threshold_not_met_aborts_even_under_the_error_threshold() -> None:
    devices = [f"d{i}" for i in range(10)]
    run = started(waves=("100%",), thresholds=Thresholds(1.0, 0.2), devices=devices)
    run(ReportDevices([Report("d0", False, "x")] + [Report(d, True) for d in devices[1:]], T0))
    assert "less than the 100% success threshold" in run.of(RolloutAborted)[0].reason


def test_cancel_stops_targeting_but_keeps_what_was_deployed() -> None:
    run = started()
    run(CancelRollout(T0))
    assert run.state.status == "cancelled"
    assert succeed(run, wave_devices(run, 0)) == []
    assert not run.of(RollbackStarted)
    with pytest.raises(DomainError) as caught:
        run(PauseRollout(T0))
    assert caught.value.code == "conflict"


def test_manual_rollback_of_a_completed_rollout_restores_every_device() -> None:
    run = started(waves=("100%",))
    succeed(run, DEVICES)
    new = run(RollbackRollout(T0, "regression found in the field"))
    assert [type(e) for e in new] == [RollbackStarted]
    assert new[0].devices == 20
    assert run(RollbackRollout(T0)) == []


def test_without_auto_rollback_an_abort_leaves_devices_alone() -> None:
    run = started(auto_rollback=False, thresholds=Thresholds(0.95, 0.05))
    run(ReportDevices([Report(wave_devices(run, 0)[0], False, "x")], T0))
    assert run.state.status == "aborted"
    assert not run.of(RollbackStarted)


def test_duplicate_and_unknown_reports_change_nothing() -> None:
    run = started()
    first = wave_devices(run, 0)[0]
    assert len(succeed(run, [first, first])) == 2 + 4 + 1  # 1 success, WaveCompleted, WaveStarted+4
    assert succeed(run, [first, "stranger"]) == []


@pytest.mark.parametrize(("thresholds", "message"), [
    (Thresholds(1.2, 0.0), "success must be in"),
    (Thresholds(0.9, 1.0), "error in"),
])
def test_inconsistent_thresholds_are_refused(thresholds, message) -> None:
    with pytest.raises(DomainError, match=message):
        Run()(CreateRollout(rollout_id="r", package=NEW, target=Target(selector="a=b"),
                            thresholds=thresholds, now=T0))


def test_start_with_no_eligible_device_is_refused_and_start_is_idempotent() -> None:
    run = Run()
    run(CreateRollout(rollout_id="r", package=NEW, target=Target(device_ids=["a"]), now=T0))
    with pytest.raises(DomainError) as caught:
        run(StartRollout(device_ids=[], excluded={"a": "no KUKSA databroker"}, now=T0))
    assert caught.value.code == "no_devices"
    run(StartRollout(device_ids=["a"], now=T0))
    assert run(StartRollout(device_ids=["a", "b"], now=T0)) == []


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


@settings(max_examples=300, deadline=None)
@given(
    steps=report_steps,
    n=st.integers(1, 20),
    error=st.sampled_from([0.0, 0.05, 0.2, 0.5]),
    waves=st.sampled_from([("1", "10%", "100%"), ("100%",), ("2", "50%")]),
)
def test_random_report_sequences_never_exceed_thresholds_silently(steps, n, error, waves) -> None:
    devices = [f"d{i}" for i in range(n)]
    run = started(waves=waves, thresholds=Thresholds(1 - error, error), timeouts=Timeouts(60, 0),
                  devices=devices)
    clock = T0
    for kind, arg in steps:
        if kind == "report":
            run(ReportDevices([Report(f"d{i}", ok) for i, ok in arg], clock))
        elif kind == "tick":
            clock += timedelta(seconds=arg)
            run(Tick(clock))
        elif kind == "pause" and run.state.status == "running":
            run(PauseRollout(clock))
        elif kind == "resume" and run.state.status == "paused":
            run(ResumeRollout(clock))
        # Invariants after every decision:
        targeted = [e.device_id for e in run.of(DeviceTargeted)]
        assert len(targeted) == len(set(targeted)), "a device was targeted twice"
        for count in run.state.counts:
            if count.failed / count.size > error:
                assert run.state.status in ("aborted", "rolled_back"), "threshold exceeded silently"
        aborted_at = next((i for i, e in enumerate(run.events) if isinstance(e, RolloutAborted)), None)
        if aborted_at is not None:
            assert not any(isinstance(e, WaveStarted | DeviceTargeted)
                           for e in run.events[aborted_at:]), "work started after an abort"
    if run.state.status == "completed":
        assert sorted(targeted) == sorted(devices)
        for count in run.state.counts:
            assert count.succeeded / count.size >= 1 - error
    outcomes = [e for e in run.events if isinstance(e, DeviceSucceeded | DeviceFailed | DeviceTimedOut)]
    assert len({e.device_id for e in outcomes}) == len(outcomes), "a device was counted twice"


def test_a_decision_on_a_device_records_the_fact_it_rests_on() -> None:
    """Device facts live only on the bus; the rollout's own events name the fact and when the
    device observed it, so its history stands from PostgreSQL alone."""
    import uuid

    run = started()
    [canary] = wave_devices(run, 0)
    fact_id, observed = uuid.uuid4(), T0 - timedelta(seconds=3)
    new = run(ReportDevices([Report(canary, True, "", fact_id, observed)], T0))
    assert new[0] == DeviceSucceeded(canary, 0, fact_id, observed)
    second = wave_devices(run, 1)
    failed_id = uuid.uuid4()
    new = run(ReportDevices([Report(second[0], False, "install: bad signature", failed_id, T0)], T0))
    assert new[0] == DeviceFailed(second[0], 1, "install: bad signature", failed_id, T0)
