"""The alert rules, pure (no servers): given the fleet's state and the time, which conditions
hold; given the open alerts, what to raise and what resolves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sdv_monitor.domain.alerts import (
    AppRow,
    DeviceRow,
    RolloutRow,
    Snapshot,
    Thresholds,
    condition_key,
    conditions,
    decide,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RULES = Thresholds(offline_after_s=300, crash_restarts=3)


def test_a_device_silent_longer_than_the_threshold_is_offline_and_a_recent_one_is_not() -> None:
    # given one device silent for 10 min, one for 1 min, one online
    snapshot = Snapshot(devices=[DeviceRow("car-1", False, NOW - timedelta(minutes=10)),
                                 DeviceRow("car-2", False, NOW - timedelta(minutes=1)),
                                 DeviceRow("car-3", True, NOW)])
    # when the rules look at it
    held = conditions(snapshot, RULES, NOW)
    # then only car-1 is an offline alert, with how long in its message
    assert [(c.kind, c.subject) for c in held.values()] == [("device_offline", "car-1")]
    assert "10 min" in next(iter(held.values())).message


def test_a_failed_app_and_a_crash_loop_are_critical_and_a_recovered_app_is_not() -> None:
    snapshot = Snapshot(apps=[AppRow("car-1", "nav", "FAILED", "health: exit 3", 0, "FAILED"),
                              AppRow("car-2", "nav", "STARTING", None, 5, "STARTING"),
                              AppRow("car-3", "nav", "RUNNING", None, 7, "RUNNING")])
    held = conditions(snapshot, RULES, NOW)
    assert sorted((c.kind, c.subject, c.severity) for c in held.values()) == [
        ("app_crash_loop", "car-2/nav", "critical"), ("app_failed", "car-1/nav", "critical")]


def test_a_rolled_back_rollout_and_an_unhealthy_service_raise_alerts() -> None:
    snapshot = Snapshot(failed_rollouts=[RolloutRow("r-1", "nav", "rolled_back", "wave 1: 2 of 4 failed")],
                        services={"orchestrator": ["relay: 40 events behind"], "registry": []})
    kinds = sorted((c.kind, c.subject) for c in conditions(snapshot, RULES, NOW).values())
    assert kinds == [("rollout_failed", "r-1"), ("service_unhealthy", "orchestrator")]


def test_open_alerts_whose_condition_cleared_resolve_and_new_conditions_raise_once() -> None:
    # given car-1 offline (alert open) and car-2 offline for the first time
    held = conditions(Snapshot(devices=[DeviceRow("car-2", False, NOW - timedelta(hours=1))]), RULES, NOW)
    open_keys = [condition_key("device_offline", "car-1"), condition_key("device_offline", "car-2")]
    # when deciding with car-2 already open and car-1 back
    decision = decide(open_keys, held)
    # then nothing is raised twice and car-1's alert resolves
    assert decision.raise_ == []
    assert decision.resolve == [condition_key("device_offline", "car-1")]
    # and with nothing open, car-2 is raised
    assert [c.subject for c in decide([], held).raise_] == ["car-2"]


def test_condition_keys_are_stream_safe_and_distinct_for_names_with_other_characters() -> None:
    a, b = condition_key("app_failed", "car-1", "nav.app"), condition_key("app_failed", "car-1", "nav_app")
    assert a != b
    assert all(ch.isalnum() or ch in "_-" for ch in a + b)
