"""Restart backoff and crash-loop detection."""

from __future__ import annotations

from sdv_edge_agent.domain.restarts import CrashLoop, Restart, RestartPolicy, after_crash

POLICY = RestartPolicy(base_delay_s=0.5, factor=2.0, max_delay_s=4.0, loop_crashes=5, window_s=60.0)


def test_delays_grow_exponentially_and_are_capped() -> None:
    crashes: tuple[float, ...] = ()
    delays = []
    policy = RestartPolicy(base_delay_s=0.5, factor=2.0, max_delay_s=3.0, loop_crashes=10, window_s=60)
    for now in range(6):
        decision = after_crash(policy, crashes, float(now))
        assert isinstance(decision, Restart)
        delays.append(decision.delay_s)
        crashes = decision.crashes
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_the_nth_crash_within_the_window_is_a_crash_loop() -> None:
    crashes: tuple[float, ...] = ()
    for now in (0.0, 1.0, 2.0, 3.0):
        decision = after_crash(POLICY, crashes, now)
        assert isinstance(decision, Restart)
        crashes = decision.crashes
    final = after_crash(POLICY, crashes, 4.0)
    assert isinstance(final, CrashLoop)
    assert final.reason == "crash loop: 5 crashes within 60s"
    assert final.crashes == (0.0, 1.0, 2.0, 3.0, 4.0)


def test_old_crashes_fall_out_of_the_window_and_the_backoff_resets() -> None:
    decision = after_crash(POLICY, (0.0, 1.0, 2.0, 3.0), 100.0)
    assert decision == Restart(0.5, (100.0,))


def test_crash_times_after_now_are_dropped_not_counted_as_recent() -> None:
    """After a reboot a monotonic clock starts again near zero: crash times kept from before it
    (or from a wall clock set back) lie in the future and must not make a crash loop."""
    before_reboot = (500_000.0, 500_010.0, 500_020.0, 500_030.0)
    decision = after_crash(POLICY, before_reboot, 42.0)
    assert decision == Restart(0.5, (42.0,))


def test_wall_clock_crash_times_from_before_a_reboot_count_while_recent() -> None:
    now = 1_800_000_000.0
    decision = after_crash(POLICY, (now - 30, now - 20, now - 10, now - 3600), now)
    assert decision == Restart(4.0, (now - 30, now - 20, now - 10, now))
    assert isinstance(after_crash(POLICY, (now - 40, now - 30, now - 20, now - 10), now), CrashLoop)
