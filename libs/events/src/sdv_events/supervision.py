"""Supervision of a service's long-lived tasks (relay, projection runners, consumers, tickers).

No task dies silently: a task that raises (or returns before shutdown) is logged with its
cause and restarted after a growing backoff; its restarts and last error show in the service's
health. A task that keeps failing — more than `max_restarts` failures within `window_s` — or
that raises `TaskCannotContinue` is not restarted: the supervisor stops the service, and
`run_service` then ends with `ServiceFailed` (a non-zero exit) instead of leaving a green
`ping` over a stale read model. (After Erlang/OTP's restart intensity.)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

import msgspec
import structlog

from sdv_events.aio import sleep_or_stop
from sdv_events.errors import SdvError

log = structlog.get_logger("sdv.supervision")

TaskState = Literal["running", "restarting", "failed", "stopped"]
Work = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class Status(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a component says of itself: healthy or not, why, and figures (lag, counts)."""

    healthy: bool = True
    reason: str = ""
    detail: dict[str, int | float | str] = {}


Probe = Callable[[], Awaitable[Status]]


class TaskHealth(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    state: TaskState
    healthy: bool
    restarts: int = 0
    last_error: str | None = None
    # Seconds since the last failure (None: never failed).
    last_error_age_s: float | None = None
    reason: str = ""
    detail: dict[str, int | float | str] = {}


class TaskCannotContinue(SdvError):
    """Raised by a task whose failure no restart can cure: the service stops non-zero."""


class ServiceFailed(SdvError):
    """A supervised task failed for good; the service stopped because of it."""

    def __init__(self, task: str, cause: BaseException | str) -> None:
        super().__init__(f"task {task!r} failed and cannot be restarted: {cause!r}")
        self.task = task
        self.cause = cause


class _Supervised:
    def __init__(self, name: str, work: Work, probe: Probe | None) -> None:
        self.name = name
        self.work = work
        self.probe = probe
        self.state: TaskState = "running"
        self.restarts = 0
        self.failures: deque[float] = deque()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.task: asyncio.Task[None] | None = None


def _cause(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


class Supervisor:
    def __init__(
        self,
        stop: asyncio.Event,
        *,
        max_restarts: int = 10,
        window_s: float = 60.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.stop = stop
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.probe_timeout_s = probe_timeout_s
        self.failed: ServiceFailed | None = None
        self._tasks: dict[str, _Supervised] = {}

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [s.task for s in self._tasks.values() if s.task is not None]

    def spawn(self, work: Work, name: str, *, probe: Probe | None = None) -> None:
        """Run `work(stop)` until shutdown, restarting it when it fails. `probe` (optional) is
        asked for the task's own health (lag, stuck) whenever the service's health is asked."""
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already supervised")
        entry = _Supervised(name, work, probe)
        self._tasks[name] = entry
        entry.task = asyncio.create_task(self._run(entry), name=name)

    async def _run(self, entry: _Supervised) -> None:
        bound = log.bind(task=entry.name)
        while not self.stop.is_set():
            entry.state = "running"
            try:
                await entry.work(self.stop)
                if self.stop.is_set():
                    break
                raise RuntimeError("returned before the service was stopped")
            except asyncio.CancelledError:
                raise
            except TaskCannotContinue as exc:
                bound.error("task_cannot_continue", error=_cause(exc), exc_info=exc)
                self._give_up(entry, exc)
                return
            except Exception as exc:
                now = time.monotonic()
                entry.last_error, entry.last_error_at = _cause(exc), now
                entry.failures.append(now)
                while entry.failures and now - entry.failures[0] > self.window_s:
                    entry.failures.popleft()
                if len(entry.failures) > self.max_restarts:
                    bound.error("task_restart_limit", error=entry.last_error,
                                failures=len(entry.failures), window_s=self.window_s, exc_info=exc)
                    self._give_up(entry, exc)
                    return
                delay = min(self.backoff_max_s,
                            self.backoff_initial_s * 2 ** (len(entry.failures) - 1))
                delay *= random.uniform(0.8, 1.2)
                bound.error("task_failed_restarting", error=entry.last_error,
                            restart_in_s=round(delay, 2), failures=len(entry.failures),
                            exc_info=exc)
                entry.state = "restarting"
                await sleep_or_stop(self.stop, delay)
                if not self.stop.is_set():
                    entry.restarts += 1
        if entry.state != "failed":
            entry.state = "stopped"

    def _give_up(self, entry: _Supervised, exc: BaseException) -> None:
        entry.state = "failed"
        entry.last_error, entry.last_error_at = _cause(exc), time.monotonic()
        if self.failed is None:
            self.failed = ServiceFailed(entry.name, exc)
        self.stop.set()

    async def health(self) -> list[TaskHealth]:
        return list(await asyncio.gather(*(self._health(e) for e in self._tasks.values())))

    async def _health(self, entry: _Supervised) -> TaskHealth:
        status = Status()
        if entry.probe is not None:
            try:
                status = await asyncio.wait_for(entry.probe(), self.probe_timeout_s)
            except Exception as exc:
                status = Status(False, f"health probe failed: {_cause(exc)}")
        healthy = status.healthy and entry.state == "running"
        reason = status.reason or ("" if entry.state == "running" else f"task is {entry.state}")
        age = None if entry.last_error_at is None else round(time.monotonic() - entry.last_error_at, 3)
        return TaskHealth(entry.name, entry.state, healthy, entry.restarts, entry.last_error, age,
                          reason, status.detail)

    async def wait_stopped(self, grace_s: float) -> None:
        """After `stop` is set: let tasks finish within `grace_s`, then cancel the rest."""
        tasks = self.tasks
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            log.warning("task_cancelled_at_shutdown", task=task.get_name())
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
