"""The heartbeat presence tracker: transitions only, with the caller's clock."""

from sdv_registry.domain.presence import PresenceTracker


def test_first_heartbeat_is_a_transition_and_later_ones_are_not() -> None:
    tracker = PresenceTracker(silence_s=10)
    assert tracker.heard("a", 0.0)
    assert not tracker.heard("a", 5.0)
    assert not tracker.heard("a", 14.0)
    assert tracker.silent(20.0) == []


def test_silence_longer_than_the_limit_makes_a_device_offline_once() -> None:
    tracker = PresenceTracker(silence_s=10)
    tracker.heard("a", 0.0)
    tracker.heard("b", 8.0)
    assert tracker.silent(10.0) == []
    assert tracker.silent(10.5) == [("a", 0.0)]
    assert tracker.silent(11.0) == []
    assert tracker.heard("a", 12.0)  # back: a transition again


def test_devices_assumed_online_after_a_restart_get_a_full_silence_period() -> None:
    tracker = PresenceTracker(silence_s=10)
    tracker.assume_online("a", 100.0)
    assert not tracker.heard("a", 101.0)  # already counted as online: no second CameOnline
    tracker.assume_online("b", 100.0)
    assert tracker.silent(109.0) == []
    assert tracker.silent(111.0) == [("b", 100.0)]
