"""One supervisor per app: the only code that changes that app, one message at a time.

Everything that can happen to an app — the desired state changed, its process exited, its health
check passed or failed, a restart delay ran out, an operator sent an op — arrives as a message in
the supervisor's inbox. After each message the supervisor reconciles: it asks the pure
`next_step` what to do until the answer is `Idle`. Because one task handles one message at a
time, there are no races between a crash, an upgrade and an op on the same app.

Every state change goes through the lifecycle state machine (`transition`), is saved to SQLite
before the supervisor moves on, and is reported (facts and reported state).

This module is the loop and the dispatch; the steps live in `supervision/`: installing (download,
verify, install, refuse), instances (processes: launch, start, stop, pause, roll back),
upgrade (install, cold upgrade, hot swap), outcomes (an exit or a health result), app_ops
(interactive ops), all on the shared `AppCore` state.
"""

from __future__ import annotations

import asyncio

from sdv_edge_agent.activation import AppActivation, GateWait
from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_edge_agent.adapters.clock import SYSTEM_CLOCK
from sdv_edge_agent.adapters.packages import InstalledVersion
from sdv_edge_agent.app_inbox import (
    Exited,
    GatesClosed,
    GatesOpen,
    HealthResult,
    Instance,
    Message,
    OpRequest,
    Poke,
    RestartDue,
    Vanished,
)
from sdv_edge_agent.domain.activation import AwaitActivation, Stage, Unstage
from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.reconcile import (
    Idle,
    Install,
    LocalApp,
    Pause,
    Resume,
    Start,
    Step,
    Stop,
    Uninstall,
    Upgrade,
    next_step,
)
from sdv_edge_agent.domain.records import AppRecord
from sdv_edge_agent.ports import AppHost, Clock, RunSpec
from sdv_edge_agent.supervision import app_ops, installing, instances, outcomes, upgrade
from sdv_edge_agent.supervision.core import AppCore
from sdv_events.schemas.packages import PackageInfo

S = AppState


class AppSupervisor(AppCore):
    def __init__(self, agent: AppHost, record: AppRecord, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(agent, record, clock)
        # Download now, activate later: the staged version and its wait (activation.py).
        self.activation = AppActivation(self, GateWait(agent.signals, self.post, self.log))

    # --- what the agent, its recovery and the activation side call ---------------------------

    async def prepare(self, package: PackageInfo) -> InstalledVersion | None:
        return await installing.prepare(self, package)

    def spec_for(self, package: PackageInfo, installed: InstalledVersion) -> RunSpec:
        return instances.spec_for(self, package, installed)

    async def launch(self, package: PackageInfo, installed: InstalledVersion,
                     adopt: tuple[int, float] | None = None) -> Instance:
        return await instances.launch(self, package, installed, adopt)

    def check_memory(self) -> None:
        instances.check_memory(self)

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            message = await self.inbox.get()
            try:
                await self._handle(message)
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reraise_if_cancelling(exc)
                self.log.exception("supervisor_step_failed", message=type(message).__name__)
                if isinstance(message, OpRequest) and not message.reply.done():
                    message.reply.set_exception(exc)

    async def _handle(self, message: Message) -> None:
        match message:
            case Poke():
                pass
            case Exited(instance, code):
                await outcomes.on_exit(self, instance, code)
            case HealthResult(instance, ok, reason):
                await outcomes.on_health(self, instance, ok, reason)
            case RestartDue(generation):
                if generation == self.restart_generation and self.restart_pending:
                    self.restart_pending = False
                    if self.record.state is S.STARTING and self.instance is None:
                        await instances.spawn(self)
            case GatesOpen() | GatesClosed():
                self.activation.on_gates(message, self._awaited())
            case Vanished(reason):
                if self.record.package is not None and self.instance is None:
                    await outcomes.crashed(self, self.record.package, reason, self.record.healthy,
                                           self.record.runs)
            case OpRequest():
                try:
                    await app_ops.op(self, message.op, message.data)
                    if not message.reply.done():
                        message.reply.set_result(self.record)
                except Exception as exc:
                    if not message.reply.done():
                        message.reply.set_exception(exc)

    def _alive(self) -> bool:
        return self.instance is not None or self.restart_pending

    def _local(self) -> LocalApp:
        return self.record.local_view(self._alive(), self.activation.released)

    def _awaited(self) -> AwaitActivation | None:
        step = next_step(self.agent.desired_app(self.name), self._local())
        return step if isinstance(step, AwaitActivation) else None

    async def _reconcile(self) -> None:
        for _ in range(20):  # a bound, not a limit a healthy reconcile gets near
            if self.candidate is not None:
                return  # a hot swap is in flight; its health result decides what comes next
            self.adopt_cause()
            desired, local = self.agent.desired_app(self.name), self._local()
            step = next_step(desired, local)
            if isinstance(step, AwaitActivation):
                self.activation.wait(step)
                return
            if isinstance(step, Idle):
                self.activation.stop()
                self.answer_if_current(desired, local)
                return
            if isinstance(step, Install | Upgrade | Start | Stage):
                if self.clock.monotonic() < self.install_not_before:
                    return  # a delayed Poke comes when it is time to try again
                self.unanswered = None  # the step's facts answer the rollout
            self.log.debug("step", step=type(step).__name__)
            await self._take(step)
        self.log.error("reconcile_not_converging", state=self.record.state)

    async def _take(self, step: Step) -> None:
        match step:
            case Stage(package):
                await self.activation.stage(package)
            case Unstage():
                self.activation.unstage()
            case Install(package):
                self.activation.switching()
                await upgrade.install(self, package)
            case Upgrade(package, hot):
                self.activation.switching()
                await (upgrade.hot_swap(self, package) if hot else upgrade.cold_upgrade(self, package))
            case Start():
                await instances.start(self)
            case Pause():
                instances.pause(self)
            case Resume():
                instances.resume(self)
            case Stop():
                self.activation.stop()
                await instances.stop(self)
            case Uninstall():
                self.activation.stop()
                await instances.uninstall(self)
