"""What the dashboard's pages show, shaped from the monitor's read views: pure functions, no
server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sdv_events.schemas.monitor import RolloutDetail, RolloutDevice, RolloutRow, RolloutWave
from sdv_monitor.dashboard.shapes import audit_query, duration, progress_series, waves_of

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def detail(devices: list[RolloutDevice], waves: list[RolloutWave], *, planned_waves: int,
           ended: datetime | None = None) -> RolloutDetail:
    row = RolloutRow(rollout_id="r-1", app="nav", version="2.0.0", status="running", devices=len(devices),
                     waves=planned_waves, created_at=T0, updated_at=T0, ended_at=ended)
    return RolloutDetail(rollout=row, waves=waves, devices=devices, devices_total=len(devices))


def device(name: str, wave: int, status: str, finished: float | None = None) -> RolloutDevice:
    return RolloutDevice(device_id=name, wave=wave, status=status,
                         finished_at=None if finished is None else at(finished))


def test_every_planned_wave_is_shown_the_ones_not_started_yet_as_waiting_with_their_devices() -> None:
    devices = [device("a", 0, "succeeded", 2.0), device("b", 1, "targeted"), device("c", 2, "planned"),
               device("d", 2, "planned")]
    waves = [RolloutWave(wave=0, size=1, state="completed", succeeded=1, failed=0, started_at=at(1),
                         completed_at=at(3)),
             RolloutWave(wave=1, size=1, state="running", succeeded=0, failed=0, started_at=at(3))]
    shown = waves_of(detail(devices, waves, planned_waves=3), now=at(10))
    assert [(w.number, w.state, w.size) for w in shown] == [(1, "completed", 1), (2, "running", 1), (3, "waiting", 2)]
    assert [[c.device_id for c in w.cells] for w in shown] == [["a"], ["b"], ["c", "d"]]
    assert shown[0].took_s == 2.0  # started → completed
    assert shown[1].took_s == 7.0  # still running: started → now
    assert shown[2].took_s is None


def test_a_running_wave_of_an_ended_rollout_does_not_go_on_counting_time() -> None:
    waves = [RolloutWave(wave=0, size=1, state="aborted", succeeded=0, failed=1, started_at=at(1))]
    shown = waves_of(detail([device("a", 0, "failed", 2.0)], waves, planned_waves=2, ended=at(2)), now=at(60))
    assert shown[0].took_s is None
    assert [w.state for w in shown] == ["aborted", "waiting"]


def test_the_progress_series_counts_outcomes_in_the_order_devices_finished() -> None:
    devices = [device("a", 0, "succeeded", 5.0), device("b", 1, "failed", 3.0), device("c", 1, "timed_out", 9.0),
               device("d", 1, "targeted")]
    series = progress_series(detail(devices, [], planned_waves=2), now=at(12))
    assert series["t"] == [0.0, 3.0, 5.0, 9.0]
    assert series["succeeded"] == [0, 0, 1, 1]
    assert series["failed"] == [0, 1, 1, 2]
    assert (series["until"], series["devices"]) == (12.0, 4)


def test_audit_form_fields_become_a_query_empty_ones_no_filter_and_times_without_zone_utc() -> None:
    query, entered, problem = audit_query({"device": " car-1 ", "rollout": "", "since": "2026-11-30T10:00:00"})
    assert problem is None
    assert query is not None
    assert (query.device, query.rollout, query.since) == ("car-1", None, datetime(2026, 11, 30, 10, tzinfo=UTC))
    assert entered["device"] == "car-1"


def test_a_bad_audit_field_is_a_reason_not_an_exception() -> None:
    query, entered, problem = audit_query({"since": "yesterday", "device": "x y"})
    assert query is None
    assert problem
    assert entered["since"] == "yesterday"  # shown back in the form as entered


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (None, 4.24, 185, 7800)] == ["—", "4.2 s", "3 min 5 s", "2 h 10 min"]
