"""The supervisor restarts a failing task with backoff, remembers why, and gives up loudly."""

from __future__ import annotations

import asyncio

import pytest

from sdv_events.supervision import ServiceFailed, Status, Supervisor, TaskCannotContinue


def fast(stop: asyncio.Event, **kwargs: float) -> Supervisor:
    return Supervisor(stop, backoff_initial_s=0.01, backoff_max_s=0.02, **kwargs)  # type: ignore[arg-type]


async def test_a_task_that_raises_is_restarted_and_its_cause_kept() -> None:
    stop = asyncio.Event()
    supervisor = fast(stop)
    runs = 0
    recovered = asyncio.Event()

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise ConnectionResetError(f"lost the server (run {runs})")
        recovered.set()
        await stop.wait()

    supervisor.spawn(flaky, "flaky")
    await asyncio.wait_for(recovered.wait(), 5)
    [health] = await supervisor.health()
    assert health.state == "running"
    assert health.healthy
    assert health.restarts == 2
    assert health.last_error == "ConnectionResetError: lost the server (run 2)"
    stop.set()
    await supervisor.wait_stopped(1)
    assert supervisor.failed is None


async def test_a_task_returning_before_shutdown_counts_as_a_failure() -> None:
    stop = asyncio.Event()
    supervisor = fast(stop)
    runs = 0

    async def quits(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await stop.wait()

    supervisor.spawn(quits, "quits")
    for _ in range(100):
        if runs > 1:
            break
        await asyncio.sleep(0.01)
    [health] = await supervisor.health()
    assert health.restarts == 1
    assert "returned before the service was stopped" in (health.last_error or "")
    stop.set()
    await supervisor.wait_stopped(1)


async def test_a_task_that_keeps_failing_stops_everything_with_service_failed() -> None:
    stop = asyncio.Event()
    supervisor = fast(stop, max_restarts=3, window_s=10.0)

    async def broken(stop: asyncio.Event) -> None:
        raise RuntimeError("schema is gone")

    async def bystander(stop: asyncio.Event) -> None:
        await stop.wait()

    supervisor.spawn(broken, "broken")
    supervisor.spawn(bystander, "bystander")
    await asyncio.wait_for(stop.wait(), 5)
    await supervisor.wait_stopped(1)
    assert isinstance(supervisor.failed, ServiceFailed)
    assert supervisor.failed.task == "broken"
    health = {h.name: h for h in await supervisor.health()}
    assert health["broken"].state == "failed"
    assert health["broken"].restarts == 3
    assert health["bystander"].state == "stopped"


async def test_task_cannot_continue_is_not_restarted() -> None:
    stop = asyncio.Event()
    supervisor = fast(stop)
    runs = 0

    async def fatal(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        raise TaskCannotContinue("credentials revoked")

    supervisor.spawn(fatal, "fatal")
    await asyncio.wait_for(stop.wait(), 5)
    await supervisor.wait_stopped(1)
    assert runs == 1
    assert supervisor.failed is not None
    assert "credentials revoked" in str(supervisor.failed)


async def test_a_probe_reports_lag_and_a_failing_probe_is_unhealthy() -> None:
    stop = asyncio.Event()
    supervisor = fast(stop)
    lagging = True

    async def probe() -> Status:
        if lagging:
            return Status(False, "12 events behind", {"behind": 12})
        raise OSError("database unreachable")

    async def work(stop: asyncio.Event) -> None:
        await stop.wait()

    supervisor.spawn(work, "consumer", probe=probe)
    [health] = await supervisor.health()
    assert (health.healthy, health.reason, health.detail) == (False, "12 events behind", {"behind": 12})
    lagging = False
    [health] = await supervisor.health()
    assert not health.healthy
    assert "database unreachable" in health.reason
    stop.set()
    await supervisor.wait_stopped(1)


async def test_two_tasks_cannot_share_a_name() -> None:
    stop = asyncio.Event()
    supervisor = Supervisor(stop)

    async def work(stop: asyncio.Event) -> None:
        await stop.wait()

    supervisor.spawn(work, "x")
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.spawn(work, "x")
    stop.set()
    await supervisor.wait_stopped(1)
