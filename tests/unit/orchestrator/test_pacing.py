"""Rollout pacing (domain/pacing.py): a rate per minute spread evenly, growing per wave, and a
cap on devices in flight."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from sdv_events.errors import DomainError
from sdv_orchestrator.domain.pacing import Bucket, Pacing, allowed

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def target_all(pacing: Pacing, devices: int, *, tick_s: float = 0.5, wave: int = 0) -> list[datetime]:
    """Target `devices` as fast as the pacing lets a ticker every `tick_s` do it."""
    bucket, times, now = Bucket(), [], T0
    while len(times) < devices:
        n = min(allowed(pacing, wave, bucket, 0, now), devices - len(times))
        if n:
            rate = pacing.rate(wave)
            if rate is not None:
                bucket.take(rate, now, n)
            times += [now] * n
        now += timedelta(seconds=tick_s)
    return times


def test_a_rate_of_60_per_minute_targets_one_device_a_second() -> None:
    times = target_all(Pacing(per_minute=60), 10)
    assert times[-1] - times[0] == timedelta(seconds=9)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))


def test_a_high_rate_is_spread_over_the_minute_not_burst_at_its_start() -> None:
    times = target_all(Pacing(per_minute=600), 600)
    first_second = sum(1 for t in times if t < T0 + timedelta(seconds=1))
    assert first_second <= 15  # one second's worth (10) plus the next tick's refill
    assert timedelta(seconds=58) <= times[-1] - times[0] <= timedelta(seconds=61)


def test_the_rate_grows_by_its_factor_per_wave_up_to_its_cap() -> None:
    pacing = Pacing(per_minute=10, growth=2.0, max_per_minute=50)
    assert [pacing.rate(w) for w in range(5)] == [10, 20, 40, 50, 50]
    assert Pacing().rate(3) is None


def test_max_in_flight_caps_what_is_targeted_until_devices_report() -> None:
    pacing = Pacing(max_in_flight=5)
    assert allowed(pacing, 0, Bucket(), in_flight=0, now=T0) == 5
    assert allowed(pacing, 0, Bucket(), in_flight=4, now=T0) == 1
    assert allowed(pacing, 0, Bucket(), in_flight=7, now=T0) == 0


def test_a_waiting_rollout_does_not_make_up_for_lost_time() -> None:
    bucket = Bucket()
    bucket.take(60, T0, 1)
    an_hour_later = T0 + timedelta(hours=1)
    assert bucket.available(60, an_hour_later) == 1  # one second's worth, not 3,600


def test_the_bucket_says_when_the_next_device_may_go() -> None:
    bucket = Bucket()
    bucket.take(30, T0, 1)  # 30/min: one every 2 s
    assert bucket.next_at(30, T0) == T0 + timedelta(seconds=2)
    assert bucket.next_at(30, T0 + timedelta(seconds=3)) == T0 + timedelta(seconds=3)


def test_folding_the_same_history_gives_the_same_pace() -> None:
    """A restarted orchestrator rebuilds the bucket from the DeviceTargeted times."""
    times = target_all(Pacing(per_minute=120), 7)
    rebuilt = Bucket()
    for at in times:
        rebuilt.take(120, at)
    now = times[-1]
    assert rebuilt.available(120, now) == 0
    assert rebuilt.next_at(120, now) == now + timedelta(milliseconds=500)


@pytest.mark.parametrize(
    "pacing",
    [
        Pacing(per_minute=0),
        Pacing(per_minute=-5),
        Pacing(per_minute=10, growth=0.5),
        Pacing(max_in_flight=0),
    ],
)
def test_nonsense_pacing_is_refused(pacing: Pacing) -> None:
    with pytest.raises(DomainError) as refused:
        pacing.check()
    assert refused.value.code == "invalid_request"
