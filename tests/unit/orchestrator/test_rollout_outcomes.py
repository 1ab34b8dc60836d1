"""The rollout decider on what issue 14 asked for: given events / when a command / then events.
Time judged by when things happened (a fact's occurrence time against the deadline, deadlines
judged only up to where the facts consumer has caught up), devices that already run the
version, offline devices (planned last; skip, wait or fail at their deadline), per-device
rollback outcomes, atomic create-and-start, and what caused each event. No servers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from sdv_events.decider_testing import Refusal, then, then_events
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceBackOnline,
    DeviceFailed,
    DeviceOffline,
    DeviceRollbackUnconfirmed,
    DeviceRolledBack,
    DevicesOffline,
    DevicesPlanned,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    RollbackCompleted,
    RollbackStarted,
    RolloutAborted,
    RolloutCompleted,
    RolloutCreated,
    RolloutPlanned,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
    WaveCompleted,
    WaveStarted,
)
from sdv_orchestrator.domain.causation import causes
from sdv_orchestrator.domain.rollout import RolloutEvent, rollout_decider
from sdv_orchestrator.domain.rollout_commands import (
    CancelRollout,
    CreateRollout,
    Report,
    ReportDevices,
    StartRollout,
    Tick,
)
from sdv_orchestrator.domain.rollout_view import view_of

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NEW = PackageInfo(
    name="app",
    version="2.0.0",
    digest="2" * 64,
    size=1,
    object_name="2" * 64,
    manifest_digest="m",
    signature="s",
    key_id="k",
    channel="stable",
    runtime="native",
    entry_point="main.py",
    python_version="3.11",
)
OLD = PackageInfo(
    name="app",
    version="1.0.0",
    digest="1" * 64,
    size=1,
    object_name="1" * 64,
    manifest_digest="m",
    signature="s",
    key_id="k",
    channel="stable",
    runtime="native",
    entry_point="main.py",
    python_version="3.11",
)
TEN = [f"d{i}" for i in range(10)]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def created_and_started(
    devices: list[str] = TEN,
    *,
    offline: list[str] = (),  # type: ignore[assignment]
    option: str = "skip",
    waves: tuple[str, ...] = ("100%",),
    thresholds: Thresholds = Thresholds(0.95, 0.05),
    device_s: float = 20,
    previous: dict[str, int] | None = None,
) -> list[RolloutEvent]:
    """The history of a rollout just created and started in one decision, as the service
    appends it (every device ran OLD before unless `previous` says otherwise)."""
    plan = StartRollout(
        device_ids=list(devices),
        offline=list(offline),
        previous_packages=[OLD],
        previous=dict.fromkeys(devices, 0) if previous is None else previous,
        now=T0,
    )
    return list(
        rollout_decider.decide(
            CreateRollout(
                rollout_id="r1",
                package=NEW,
                target=Target(selector="fleet=x"),
                strategy=Strategy("canary", list(waves)),
                thresholds=thresholds,
                timeouts=Timeouts(device_s, 0),
                offline=option,
                now=T0,
                plan=plan,  # type: ignore[arg-type]
            ),
            rollout_decider.empty(),
        )
    )


def kinds(events: list[RolloutEvent]) -> list[type]:
    return [type(e) for e in events]


def ok(device: str, observed: datetime, digest: str = NEW.digest, kind: str = "") -> Report:
    return Report(device, True, "", uuid.uuid4(), observed, digest, kind)  # type: ignore[arg-type]


def view(history: list[RolloutEvent]):  # type: ignore[no-untyped-def]
    return view_of("r1", rollout_decider.fold(history))


# --- time: judged by when things happened --------------------------------------------------------


def test_a_success_that_happened_before_the_deadline_counts_however_late_it_arrives() -> None:
    given = created_and_started(["d0"])
    # The orchestrator (or its database) was down: the fact is handled 60 s later.
    new = then_events(
        rollout_decider, given=given, when=ReportDevices([ok("d0", at(15))], at(60), tolerance_s=5)
    )
    assert kinds(new) == [DeviceSucceeded, WaveCompleted, RolloutCompleted]


def test_a_fact_that_happened_after_the_deadline_and_its_skew_tolerance_is_a_timeout() -> None:
    given = created_and_started(["d0", "d1"], thresholds=Thresholds(0.5, 0.5))
    late, skewed = ok("d0", at(26)), ok("d1", at(24))  # deadline at 20 s, 5 s tolerance
    new = then_events(rollout_decider, given=given, when=ReportDevices([late, skewed], at(27), tolerance_s=5))
    assert new[0] == DeviceTimedOut("d0", 0, late.fact_id, at(26))
    assert isinstance(new[1], DeviceSucceeded)
    assert new[1].device_id == "d1"


def test_no_device_times_out_until_the_facts_consumer_caught_up_past_its_deadline() -> None:
    given = created_and_started(["d0"])
    # An hour later by the clock, but facts are handled only up to 10 s: nothing is judged.
    assert then(rollout_decider, given=given, when=Tick(at(3600), facts_until=at(10), tolerance_s=5)) == []
    assert (
        then(rollout_decider, given=given, when=Tick(at(3600), facts_until=at(24), tolerance_s=5)) == []
    )  # skew tolerance
    assert kinds(
        then_events(rollout_decider, given=given, when=Tick(at(3600), facts_until=at(25), tolerance_s=5))
    )[:2] == [
        DeviceTimedOut,
        RolloutAborted,
    ]


def test_an_outage_longer_than_the_device_timeout_turns_no_success_into_a_timeout() -> None:
    given = created_and_started(TEN, thresholds=Thresholds(1.0, 0.0))
    # Devices reported healthy at 5 s; the facts consumer was stuck (facts pending) until 50 s.
    for second in (21, 30, 49):
        assert (
            then(rollout_decider, given=given, when=Tick(at(second), facts_until=at(4), tolerance_s=5)) == []
        )
    new = then_events(
        rollout_decider, given=given, when=ReportDevices([ok(d, at(5)) for d in TEN], at(50), tolerance_s=5)
    )
    assert kinds(new)[-1] is RolloutCompleted
    assert not any(isinstance(e, DeviceTimedOut | RolloutAborted) for e in new)


# --- devices that already run the version ---------------------------------------------------------


def test_a_device_already_running_the_version_succeeds_at_once_with_its_reason() -> None:
    given = created_and_started(["d0", "d1"])
    current = ok("d0", at(1), kind="already_current")
    new = then_events(rollout_decider, given=given, when=ReportDevices([current, ok("d1", at(2))], at(2)))
    assert new[0] == DeviceSucceeded("d0", 0, current.fact_id, at(1), "already_current")
    assert kinds(new)[-1] is RolloutCompleted
    shown = view(given + new)
    assert {d.device_id: d.status for d in shown.devices} == {"d0": "already_current", "d1": "succeeded"}
    assert (shown.succeeded_total, shown.already_current_total) == (2, 1)


def test_facts_about_another_version_change_nothing() -> None:
    given = created_and_started(["d0"])
    assert (
        then(rollout_decider, given=given, when=ReportDevices([ok("d0", at(1), digest=OLD.digest)], at(1)))
        == []
    )
    assert (
        then(rollout_decider, given=given, when=ReportDevices([ok("d0", at(1), kind="uninstalled")], at(1)))
        == []
    )


# --- offline devices -----------------------------------------------------------------------------


def test_offline_devices_are_planned_after_online_ones_and_shown_from_the_start() -> None:
    given = created_and_started(TEN, offline=["d0", "d1"], waves=("1", "50%", "100%"))
    plan = [d for e in given if isinstance(e, DevicesPlanned) for d in e.devices]
    assert [d.device_id for d in plan] == [*TEN[2:], "d0", "d1"]
    assert {d.device_id: d.wave for d in plan}["d0"] == 2  # the last wave
    assert [(d.device_id, d.wave) for e in given if isinstance(e, DevicesOffline) for d in e.devices] == [
        ("d0", 2),
        ("d1", 2),
    ]
    shown = view(given)
    assert shown.offline_total == 2
    assert [w.offline for w in shown.waves] == [0, 0, 2]
    waiting = [d for d in shown.devices if d.status == "waiting_offline"]
    assert [(d.device_id, d.wave) for d in waiting] == [("d0", 2), ("d1", 2)]


def offline_at_deadline(option: str) -> tuple[list[RolloutEvent], list[RolloutEvent]]:
    given = created_and_started(TEN, offline=["d0", "d1"], option=option)
    reported = then_events(
        rollout_decider, given=given, when=ReportDevices([ok(d, at(3)) for d in TEN[2:]], at(3))
    )
    given += reported
    # The deadline passed, facts are caught up: d0, d1 are still offline (the registry says so).
    new = then_events(
        rollout_decider,
        given=given,
        when=Tick(at(30), facts_until=at(30), presence={"d0": False, "d1": False}),
    )
    return given, new


def test_offline_skip_completes_with_the_offline_devices_reported_apart() -> None:
    given, new = offline_at_deadline("skip")
    assert kinds(new) == [DeviceOffline, DeviceOffline, WaveCompleted, RolloutCompleted]
    assert {e.outcome for e in new if isinstance(e, DeviceOffline)} == {"skipped"}
    assert new[-1] == RolloutCompleted(8, 0, at(30), 2)
    shown = view(given + new)
    assert (shown.status, shown.skipped_total, shown.offline_total) == ("completed", 2, 0)
    assert {d.status for d in shown.devices if d.device_id in ("d0", "d1")} == {"skipped_offline"}


def test_offline_wait_waits_and_gives_a_fresh_deadline_once_the_device_is_back() -> None:
    given, new = offline_at_deadline("wait")
    assert kinds(new) == [DeviceOffline, DeviceOffline]
    given += new
    assert view(given).offline_total == 2
    # Long past any deadline, still offline: nothing happens (no timeout, no completion).
    assert (
        then(
            rollout_decider,
            given=given,
            when=Tick(at(900), facts_until=at(900), presence={"d0": False, "d1": False}),
        )
        == []
    )
    back = then_events(
        rollout_decider,
        given=given,
        when=Tick(at(1000), facts_until=at(1000), presence={"d0": True, "d1": False}),
    )
    assert back == [DeviceBackOnline("d0", 0, at(1020))]
    given += back
    given += then_events(
        rollout_decider, given=given, when=ReportDevices([ok("d0", at(1010)), ok("d1", at(1011))], at(1011))
    )
    assert view(given).status == "completed"


def test_offline_fail_counts_them_as_failures_and_aborts_over_the_threshold() -> None:
    _, new = offline_at_deadline("fail")
    assert kinds(new) == [DeviceOffline, RolloutAborted, RollbackStarted]  # 1 of 10 > 5 %
    assert new[0].outcome == "failed"


def test_a_device_offline_at_its_deadline_follows_the_option_and_an_online_silent_one_times_out() -> None:
    given = created_and_started(["d0", "d1"], thresholds=Thresholds(0.01, 0.99))
    new = then_events(
        rollout_decider,
        given=given,
        when=Tick(at(30), facts_until=at(30), presence={"d0": False, "d1": True}),
    )
    assert new[:2] == [DeviceOffline("d0", 0, "skipped", at(30)), DeviceTimedOut("d1", 0)]


# --- rollback outcomes ---------------------------------------------------------------------------


def test_after_an_abort_every_device_ends_rolled_back_or_unconfirmed_then_rollback_completes() -> None:
    devices = ["a", "b", "c", "fresh"]
    given = created_and_started(devices, previous={"a": 0, "b": 0, "c": 0})  # fresh: no app before
    given += then_events(
        rollout_decider,
        given=given,
        when=ReportDevices([ok("a", at(1)), Report("b", False, "health: crash", uuid.uuid4(), at(2))], at(2)),
    )
    assert kinds(given[-2:]) == [RolloutAborted, RollbackStarted]
    assert {d.status for d in view(given).devices} == {"rolling_back"}  # never `targeted` after it
    back = then_events(
        rollout_decider,
        given=given,
        when=ReportDevices(
            [
                ok("a", at(3), digest=OLD.digest),  # reinstalled its previous version
                ok("b", at(3), digest=OLD.digest, kind="already_current"),  # never left it
                ok("fresh", at(3), kind="uninstalled"),  # had no app before: removed
                ok("c", at(3)),  # about the new version: no rollback news
            ],
            at(3),
        ),
    )
    assert kinds(back) == [DeviceRolledBack] * 3
    given += back
    done = then_events(
        rollout_decider, given=given, when=Tick(at(100), facts_until=at(100), presence={"c": False})
    )
    assert done[0] == DeviceRollbackUnconfirmed("c", 0, "offline at its rollback deadline")
    assert done[1] == RollbackCompleted(3, 1, at(100))
    shown = view(given + done)
    assert shown.rollback == "completed"
    statuses = {d.device_id: (d.status, d.reason) for d in shown.devices}
    assert statuses["a"] == ("rolled_back", "was succeeded")
    assert statuses["b"] == ("rolled_back", "was failed: health: crash")
    assert statuses["c"][0] == "rollback_unconfirmed"


def test_a_cancelled_rollout_shows_its_untouched_devices_as_cancelled_not_targeted() -> None:
    given = created_and_started(["d0", "d1"])
    given += then_events(rollout_decider, given=given, when=ReportDevices([ok("d0", at(1))], at(1)))
    given += then_events(rollout_decider, given=given, when=CancelRollout(at(2)))
    assert {d.device_id: d.status for d in view(given).devices} == {"d0": "succeeded", "d1": "cancelled"}


# --- create and start in one decision --------------------------------------------------------------


def test_create_with_a_plan_decides_everything_at_once_and_a_retry_decides_nothing() -> None:
    given = created_and_started(["d0", "d1"])
    assert kinds(given)[:2] == [RolloutCreated, RolloutPlanned]
    assert kinds(given)[-3:] == [WaveStarted, DeviceTargeted, DeviceTargeted]
    retry = CreateRollout(
        rollout_id="r1",
        package=NEW,
        target=Target(selector="fleet=x"),
        now=at(5),
        plan=StartRollout(device_ids=["d0", "d1"], now=at(5)),
    )
    assert then(rollout_decider, given=given, when=retry) == []


def test_a_create_that_cannot_start_decides_nothing() -> None:
    create = CreateRollout(
        rollout_id="r1",
        package=NEW,
        target=Target(selector="fleet=x"),
        now=T0,
        plan=StartRollout(device_ids=[], excluded={"d0": "no KUKSA databroker"}, now=T0),
    )
    assert then(rollout_decider, given=[], when=create) == Refusal(
        "no_devices", "no eligible device for the target (1 excluded)"
    )


# --- causation -----------------------------------------------------------------------------------


def test_an_abort_is_caused_by_the_device_fact_that_crossed_the_threshold() -> None:
    given = created_and_started(TEN)
    fine, bad = ok("d3", at(1)), Report("d4", False, "crash", uuid.uuid4(), at(2), NEW.digest)
    new = then_events(rollout_decider, given=given, when=ReportDevices([fine, bad, ok("d5", at(2))], at(2)))
    assert kinds(new) == [DeviceSucceeded, DeviceFailed, RolloutAborted, RollbackStarted]
    # d5's report came after the abort: the rollout was over for it.
    assert causes(new) == [str(fine.fact_id), str(bad.fact_id), 1, 2]


def test_timeouts_are_caused_by_the_tick_and_what_follows_by_them() -> None:
    given = created_and_started(["d0"])
    new = then_events(rollout_decider, given=given, when=Tick(at(60), facts_until=at(60)))
    assert kinds(new) == [DeviceTimedOut, RolloutAborted, RollbackStarted]
    assert causes(new) == [None, 0, 1]  # None: the command's own causation (the tick)


def test_a_plan_is_caused_by_its_create_and_each_targeting_by_its_wave() -> None:
    given = created_and_started(["d0", "d1"], offline=["d1"])
    found = causes(given)
    assert found[0] is None  # the operator's (or policy's) command
    planned = kinds(given).index(RolloutPlanned)
    assert found[planned] == 0
    wave = kinds(given).index(WaveStarted)
    assert found[wave] == planned
    assert all(found[i] == wave for i, e in enumerate(given) if isinstance(e, DeviceTargeted))
    assert all(
        found[i] == planned for i, e in enumerate(given) if isinstance(e, DevicesPlanned | DevicesOffline)
    )


# --- properties ----------------------------------------------------------------------------------

steps = st.lists(
    st.one_of(
        # reports: (device, ok, seconds after the previous clock it happened, kind)
        st.tuples(
            st.just("report"),
            st.lists(
                st.tuples(
                    st.integers(0, 11),
                    st.booleans(),
                    st.integers(-30, 30),
                    st.sampled_from(["", "already_current"]),
                ),
                max_size=5,
            ),
        ),
        # ticks: (seconds the clock moves, how far behind the facts consumer is, who is offline)
        st.tuples(
            st.just("tick"),
            st.tuples(st.integers(0, 40), st.integers(0, 60), st.sets(st.integers(0, 11), max_size=4)),
        ),
    ),
    max_size=40,
)


def deadlines(history: list[RolloutEvent]) -> dict[str, datetime | None]:
    """Each targeted device's deadline, as the history says (None: waited for offline)."""
    due: dict[str, datetime | None] = {}
    for e in history:
        if isinstance(e, DeviceTargeted | DeviceBackOnline):
            due[e.device_id] = e.deadline
        elif isinstance(e, DeviceOffline) and e.outcome == "waiting":
            due[e.device_id] = None
    return due


def wave_failures(history: list[RolloutEvent]) -> dict[int, tuple[int, int, int]]:
    """Wave → (planned size, failed, skipped), as the history says."""
    counts: dict[int, list[int]] = {}
    for e in history:
        if isinstance(e, DevicesPlanned):
            for d in e.devices:
                counts.setdefault(d.wave, [0, 0, 0])[0] += 1
        elif isinstance(e, DeviceFailed | DeviceTimedOut) or (
            isinstance(e, DeviceOffline) and e.outcome == "failed"
        ):
            counts[e.wave][1] += 1
        elif isinstance(e, DeviceOffline) and e.outcome == "skipped":
            counts[e.wave][2] += 1
    return {wave: (size, failed, skipped) for wave, (size, failed, skipped) in counts.items()}


@settings(max_examples=300, deadline=None)
@given(
    steps=steps,
    option=st.sampled_from(["skip", "wait", "fail"]),
    offline=st.sets(st.integers(0, 11), max_size=4),
    error=st.sampled_from([0.0, 0.2, 0.5]),
)
def test_random_histories_never_time_out_early_nor_count_a_device_twice(
    steps: list,
    option: str,
    offline: set[int],
    error: float,
) -> None:
    devices = [f"d{i}" for i in range(12)]
    history = created_and_started(
        devices,
        offline=[f"d{i}" for i in offline],
        option=option,
        waves=("2", "50%", "100%"),
        thresholds=Thresholds(1 - error, error),
        device_s=20,
    )
    clock, tolerance = T0, 5.0
    for kind, arg in steps:
        due = deadlines(history)  # as they stand before this decision
        if kind == "report":
            reports = [
                Report(
                    f"d{i}",
                    good,
                    "" if good else "x",
                    uuid.uuid4(),
                    clock + timedelta(seconds=shift),
                    NEW.digest,
                    how,
                )  # type: ignore[arg-type]
                for i, good, shift, how in arg
            ]
            new = then_events(rollout_decider, given=history, when=ReportDevices(reports, clock, tolerance))
            for event in new:
                if isinstance(event, DeviceTimedOut):  # a report judged late: it happened late
                    deadline = due[event.device_id]
                    assert deadline is not None
                    assert event.observed_at is not None
                    assert event.observed_at > deadline + timedelta(seconds=tolerance)
        else:
            moved, behind, away = arg
            clock += timedelta(seconds=moved)
            facts_until = clock - timedelta(seconds=behind)
            presence = {f"d{i}": i not in away for i in range(12)}
            new = then_events(
                rollout_decider, given=history, when=Tick(clock, facts_until, presence, tolerance)
            )
            for event in new:
                if isinstance(event, DeviceTimedOut | DeviceOffline):  # never before facts caught up
                    deadline = due[event.device_id]
                    assert deadline is not None
                    assert deadline + timedelta(seconds=tolerance) <= facts_until
                    assert isinstance(event, DeviceOffline) == (not presence[event.device_id])
        history += new
        aborted = any(isinstance(e, RolloutAborted) for e in history)
        for size, failed, skipped in wave_failures(history).values():
            counted = size - skipped
            if counted and failed / counted > error:
                assert aborted, "threshold exceeded silently"
    final = [
        e.device_id
        for e in history
        if isinstance(e, DeviceSucceeded | DeviceFailed | DeviceTimedOut)
        or (isinstance(e, DeviceOffline) and e.outcome != "waiting")
    ]
    assert len(final) == len(set(final)), "a device was counted twice"
    if any(isinstance(e, RolloutCompleted) for e in history):
        assert sorted(final) == devices
