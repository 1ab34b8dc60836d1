"""Download now, activate later, on the supervisor's side: staging a version beside the active one,
waiting for its activation gates, reporting why the switch waits, and releasing it.

`domain/activation.py` decides (`Stage`, `AwaitActivation`, `Unstage`); the app's supervisor takes
those steps through `AppActivation`, and switches with its ordinary install/upgrade step once the
activation is released. The gates are watched by one task per app at most (`GateWait`), on the
agent's databroker subscription (adapters/vehicle_signals.py: pushed updates, judged on each; no
polling). The task only tells the supervisor, through its inbox: `GatesClosed` when the reason the
switch waits changes, `GatesOpen` once every gate holds. A newer desired document supersedes the
wait (another version, other gates, a hold, no entry): the task is cancelled and the staged files
are reused when the digest is the same.

A gate that flips back during the switch does not stop it: **the switch is finished**. The wait
ends the moment the gates hold, and the supervisor then takes the install/upgrade step to its end
(one message at a time, nothing interrupts it). Stopping half-way could leave the vehicle with
neither version running, worse than a version started a moment after the condition ended; the new
version is then on trial as after any upgrade (health check, rollback).

A hold waits for a newer document (the orchestrator clears it: `sdv rollout activate`, a window
opening), not for signals. A deferral is reported once per reason and desired entry, also across
agent restarts. A reason without a value (nothing from the databroker yet) is told only after a
short grace, so that the moment between subscribing and the first update is not reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from sdv_edge_agent.adapters.packages import InstalledVersion
from sdv_edge_agent.app_inbox import GatesClosed, GatesOpen, Message, Poke
from sdv_edge_agent.domain.activation import (
    ActivationKey,
    AwaitActivation,
    deferral,
    deferral_mark,
)
from sdv_edge_agent.domain.lifecycle import AppState, transition
from sdv_edge_agent.domain.records import AppRecord
from sdv_edge_agent.ports import VehicleSignals
from sdv_events.gates import Gate, Verdict
from sdv_events.schemas.agent import ActivationDeferred, AppFact, AppStaged
from sdv_events.schemas.packages import PackageInfo

GRACE_S = 1.0  # a verdict without a value waits this long for the first update before it is told
RETRY_S = 2.0  # a wait that failed is started again after this long


class GateWait:
    """At most one wait for one app's activation gates, telling the supervisor through `post`."""

    def __init__(self, signals: VehicleSignals, post: Callable[[Message], None],
                 log: structlog.typing.FilteringBoundLogger) -> None:
        self.signals = signals
        self.post = post
        self.log = log  # bound to the app; each wait binds its rollout too
        self.key: ActivationKey | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> bool:
        return self._task is not None and not self._task.done()

    def ensure(self, key: ActivationKey, gates: tuple[Gate, ...], rollout_id: str | None) -> None:
        """Watch `gates` for `key`; a wait already on for that key goes on undisturbed."""
        if self.key == key and self.waiting:
            return
        self.cancel()
        self.key = key
        log = self.log.bind(rollout_id=rollout_id)
        self._task = asyncio.create_task(self._wait(key, gates, log), name=f"gates:{key.digest[:12]}")
        self._task.add_done_callback(lambda task: self._ended(task, log))

    def cancel(self) -> None:
        self._drop_pending()
        if self._task is not None:
            self._task.cancel()
        self._task, self.key = None, None

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    async def _wait(self, key: ActivationKey, gates: tuple[Gate, ...],
                    log: structlog.typing.FilteringBoundLogger) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()

        def deferred(verdict: Verdict) -> None:
            self._drop_pending()
            if verdict.value is None:
                self._pending = loop.call_later(GRACE_S, self.post, GatesClosed(key, verdict))
            else:
                self.post(GatesClosed(key, verdict))

        await self.signals.wait_until(gates, None, deferred)
        self._drop_pending()
        log.info("activation_gates_hold", gates=list(key.gates),
                      waited_s=round(loop.time() - started, 3))
        self.post(GatesOpen(key))

    def _ended(self, task: asyncio.Task[None], log: structlog.typing.FilteringBoundLogger) -> None:
        """A wait that failed (never expected: the subscription retries on its own) is logged
        with its cause and started again by the next reconcile."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("activation_wait_failed", error=f"{type(error).__name__}: {error}", retry_in_s=RETRY_S)
        if self._task is task:
            self._task, self.key = None, None
        asyncio.get_running_loop().call_later(RETRY_S, self.post, Poke())


class Switching(Protocol):
    """What the activation side uses of its app's supervisor (supervisor.py)."""

    record: AppRecord
    log: structlog.typing.FilteringBoundLogger

    def save(self) -> None: ...

    def emit(self, cls: type[AppFact], package: PackageInfo | None = None, run: int | None = None,
             **fields: Any) -> None: ...

    async def prepare(self, package: PackageInfo) -> InstalledVersion | None: ...

    def keep_versions(self, *packages: PackageInfo | None) -> None: ...


class AppActivation:
    """One app's staged version and its wait; `released`: the activation whose gates held."""

    def __init__(self, app: Switching, gates: GateWait) -> None:
        self.app = app
        self.gates = gates
        self.released: ActivationKey | None = None

    async def stage(self, package: PackageInfo) -> None:
        """Download, verify and install beside the active version, which is left as it is (with
        nothing active the install begins here, and waits). Reported by `AppStaged`."""
        self.gates.cancel()
        record = self.app.record
        if record.package is None:
            record.attempt = package
            if record.state is not AppState.INSTALLING:
                record.state = transition(record.name, record.state, AppState.INSTALLING)
                self.app.log.info("state", state=record.state.value, version=package.version)
        self.app.save()
        if await self.app.prepare(package) is None:
            return
        record.staged, record.deferred = package, None
        self.app.emit(AppStaged, package)
        self.app.save()
        self.app.keep_versions(record.package, record.previous, package)
        self.app.log.info("staged", version=package.version, rollout_id=record.rollout_id)

    def unstage(self) -> None:
        """The staged version is superseded: its files go (unless it is the active or previous
        one), the wait ends."""
        self.gates.cancel()
        record = self.app.record
        staged = record.staged
        record.staged, record.deferred = None, None
        self.app.save()
        self.app.keep_versions(record.package, record.previous)
        self.app.log.info("staged_version_superseded", version=staged.version if staged else None,
                          rollout_id=record.rollout_id)

    def wait(self, step: AwaitActivation) -> None:
        """Wait for the staged version's gates (or, held, for a newer document)."""
        if step.held:
            self.gates.cancel()
            self._report(step, None)
        else:
            self.gates.ensure(step.key, step.gates, self.app.record.rollout_id)

    def switching(self) -> None:
        """The switch to the staged version begins: it consumes the stage and the release (a
        later retry of the same version waits for its gates again)."""
        self.gates.cancel()
        self.released = None
        if self.app.record.staged is not None:
            self.app.record.staged, self.app.record.deferred = None, None

    def stop(self) -> None:
        self.gates.cancel()

    def on_gates(self, message: GatesOpen | GatesClosed, awaited: AwaitActivation | None) -> None:
        """A word from the wait, if it is about what the app awaits now (else it is stale)."""
        if awaited is None or awaited.key != message.key:
            return
        if isinstance(message, GatesOpen):
            self.released = message.key
            self.app.log.info("activation_released", version=awaited.package.version,
                              rollout_id=self.app.record.rollout_id)
        else:
            self._report(awaited, message.verdict)

    def _report(self, step: AwaitActivation, verdict: Verdict | None) -> None:
        record = self.app.record
        why = deferral(step, verdict)
        mark = deferral_mark(record.rollout_id, record.revision, why.reason)
        if mark == record.deferred:
            return
        record.deferred = mark
        self.app.emit(ActivationDeferred, step.package, reason=why.reason, gate=why.gate,
                      signal=why.signal, value=why.value, held=why.held)
        self.app.save()
        self.app.log.info("activation_deferred", version=step.package.version, reason=why.reason,
                          rollout_id=record.rollout_id)
