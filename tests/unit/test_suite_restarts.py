"""How `sdv up` backs off restarting a child that dies (sdv_client.children.Restarts): at once the
first time, then 1, 2, 4 … s up to a cap; after a stable period up, at once again; and a child
that keeps dying without ever staying up is given up on. Pure: durations in, delays out."""

from __future__ import annotations

from sdv_client.children import RestartPolicy, Restarts

POLICY = RestartPolicy(base_s=1.0, max_s=30.0, stable_s=60.0, give_up_after=8)


def test_a_crashing_child_waits_longer_each_time_up_to_the_cap() -> None:
    restarts = Restarts(POLICY)
    assert [restarts.after_death(up_for_s=1.0) for _ in range(8)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_the_backoff_starts_over_after_a_stable_period() -> None:
    """Today's crash is not punished for last week's: a sixth crash in a day restarts at once."""
    restarts = Restarts(POLICY)
    for _ in range(5):
        restarts.after_death(up_for_s=2.0)
    assert restarts.after_death(up_for_s=2.0) == 16.0
    assert restarts.after_death(up_for_s=POLICY.stable_s) == 0.0
    assert restarts.after_death(up_for_s=3.0) == 1.0
    assert restarts.total == 8


def test_a_child_that_never_stays_up_is_given_up_on() -> None:
    restarts = Restarts(POLICY)
    delays = [restarts.after_death(up_for_s=0.5) for _ in range(POLICY.give_up_after + 1)]
    assert None not in delays[:-1]
    assert delays[-1] is None
