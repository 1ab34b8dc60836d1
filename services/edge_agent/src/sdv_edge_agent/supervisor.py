"""One supervisor per app: the only code that changes that app, one message at a time.

Everything that can happen to an app — the desired state changed, its process exited, its health
check passed or failed, a restart delay ran out, an operator sent an op — arrives as a message in
the supervisor's inbox. After each message the supervisor reconciles: it asks the pure
`next_step` what to do until the answer is `Idle`. Because one task handles one message at a
time, there are no races between a crash, an upgrade and an op on the same app.

Every state change goes through the lifecycle state machine (`transition`), is saved to SQLite
before the supervisor moves on, and is reported (facts and reported state).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import structlog

from sdv_edge_agent.activation import AppActivation, GateWait
from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_edge_agent.adapters.clock import SYSTEM_CLOCK
from sdv_edge_agent.adapters.packages import InstalledVersion, InstallError
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
    describe_exit,
)
from sdv_edge_agent.domain.activation import AwaitActivation, Stage, Unstage
from sdv_edge_agent.domain.admission import is_downgrade
from sdv_edge_agent.domain.attribution import already_current
from sdv_edge_agent.domain.lifecycle import LIVE, AppState, transition
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
from sdv_edge_agent.domain.restarts import CrashLoop, after_crash
from sdv_edge_agent.ports import AppHost, Clock, Process, RunSpec
from sdv_events.errors import DomainError
from sdv_events.schemas.agent import (
    AppAlreadyCurrent,
    AppDownloadStarted,
    AppFact,
    AppFailed,
    AppHealthy,
    AppInstalled,
    AppPaused,
    AppResumed,
    AppRolledBack,
    AppStarted,
    AppStopped,
    AppUninstalled,
)
from sdv_events.schemas.deployment import DesiredApp
from sdv_events.schemas.packages import PackageInfo

S = AppState
log = structlog.get_logger("sdv.agent.app")
MB = 1024 * 1024


class AppSupervisor:
    def __init__(self, agent: AppHost, record: AppRecord, clock: Clock = SYSTEM_CLOCK) -> None:
        self.agent = agent
        self.clock = clock
        self.record = record
        self.name = record.name
        self.instance: Instance | None = None
        self.candidate: Instance | None = None  # a hot-swap candidate, beside `instance`
        self.restart_generation = 0
        self.restart_pending = False
        self.install_not_before = 0.0  # after a transient download failure: wait, then retry
        self.install_retries = 0
        # A new rollout's id until a fact answers it: reconcile reports it already current or
        # a step's facts do.
        self.unanswered: str | None = None
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.log = log.bind(app=self.name)
        # Download now, activate later: the staged version and its wait (activation.py).
        self.activation = AppActivation(self, GateWait(agent.signals, self.post, self.log))

    # --- the loop ----------------------------------------------------------------------------

    def post(self, message: Message) -> None:
        self.inbox.put_nowait(message)

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
                await self._on_exit(instance, code)
            case HealthResult(instance, ok, reason):
                await self._on_health(instance, ok, reason)
            case RestartDue(generation):
                if generation == self.restart_generation and self.restart_pending:
                    self.restart_pending = False
                    if self.record.state is S.STARTING and self.instance is None:
                        await self._spawn()
            case GatesOpen() | GatesClosed():
                self.activation.on_gates(message, self._awaited())
            case Vanished(reason):
                if self.record.package is not None and self.instance is None:
                    await self._crashed(self.record.package, reason, self.record.healthy, self.record.runs)
            case OpRequest():
                try:
                    await self._op(message.op, message.data)
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
            self._adopt_cause()
            desired, local = self.agent.desired_app(self.name), self._local()
            step = next_step(desired, local)
            if isinstance(step, AwaitActivation):
                self.activation.wait(step)
                return
            if isinstance(step, Idle):
                self.activation.stop()
                self._answer_if_current(desired, local)
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
                await self._install(package)
            case Upgrade(package, hot):
                self.activation.switching()
                await (self._hot_swap(package) if hot else self._cold_upgrade(package))
            case Start():
                await self._start()
            case Pause():
                self._pause()
            case Resume():
                self._resume()
            case Stop():
                self.activation.stop()
                await self._stop()
            case Uninstall():
                self.activation.stop()
                await self._uninstall()

    # --- bookkeeping ---------------------------------------------------------------------------

    def _move(self, target: AppState) -> None:
        self.record.state = transition(self.name, self.record.state, target)
        shown = self.record.shown
        self.log.info("state", state=target.value, version=shown.version if shown else None)

    def save(self) -> None:
        self.agent.store.save_app(self.record)
        self.agent.changed()

    def emit(self, cls: type[AppFact], package: PackageInfo | None = None, run: int | None = None,
              **fields: Any) -> None:
        """A fact about `package` (default: the version shown), naming the cause the record
        adopted (domain/attribution.py); `run`: the run it is about (its identity)."""
        package = package or self.record.shown
        if package is None:
            return
        fact = cls(
            device_id=self.agent.device_id, app=self.name, version=package.version,
            digest=package.digest, desired_revision=self.record.revision or self.agent.revision,
            rollout_id=self.record.rollout_id, **fields,
        )
        self.agent.facts.emit(fact, run)

    def keep_versions(self, *packages: PackageInfo | None) -> None:
        """Remove every version of the app from disk but these."""
        self.agent.prune_versions(self.name, [p for p in packages if p is not None])

    def _adopt_cause(self) -> None:
        """Before acting on a desired entry: its facts name its rollout from now on."""
        cause = self.agent.cause_of(self.name)
        if cause is None or (cause.rollout_id, cause.revision) == self.record.cause:
            return
        if cause.rollout_id not in (None, self.record.rollout_id):
            self.unanswered = cause.rollout_id
        self.record.rollout_id, self.record.revision = cause.rollout_id, cause.revision
        self.save()

    def _answer_if_current(self, desired: DesiredApp | None, local: LocalApp) -> None:
        """A new rollout of the version that runs here, healthy: it is answered at once."""
        if self.unanswered is None or desired is None:
            return
        self.unanswered = None
        if already_current(desired, local, self.record.healthy):
            at = self.record.healthy_at
            self.emit(AppAlreadyCurrent, since=datetime.fromtimestamp(at, UTC).isoformat() if at else None)
            self.log.info("already_current", rollout_id=self.record.rollout_id)

    def _adopt_config(self) -> None:
        desired = self.agent.desired_app(self.name)
        if desired is not None:
            self.record.config = dict(desired.config)

    def _failed_here(self, package: PackageInfo) -> None:
        """This version is not tried again for the desired entry's rollout."""
        self.record.failed_digest = package.digest
        self.record.failed_rollout = self.agent.desired_rollout(self.name)

    # --- install / upgrade -----------------------------------------------------------------------

    async def _fetch_and_install(self, package: PackageInfo) -> InstalledVersion:
        if package.runtime not in self.agent.runtimes:
            # Whether the device has no such runtime or its engine did not come up with the agent.
            raise InstallError("install", f"needs the {package.runtime} runtime; the "
                                          f"{package.runtime} runtime is not available on this device "
                                          f"(it runs {', '.join(sorted(self.agent.runtimes))} apps only)")
        if package.python_version != self.agent.python_version:
            raise InstallError("install", f"needs Python {package.python_version}; this device has "
                                          f"{self.agent.python_version}")
        installed = self.agent.installer.installed(package)
        if installed is None:
            self.emit(AppDownloadStarted, package, size=package.size)
            artifact = await self.agent.download(package)
            installed = await self.agent.installer.install(package, artifact)
        else:  # already here (same digest): the description must still be what was signed
            problem = self.agent.installer.signed_problem(package)
            if problem is not None:
                raise InstallError("verify", problem)
        # The runtime's part of the install (a container image): failing it fails the install.
        await self.agent.runtime_for(package).prepare(package, installed.app_dir)
        return installed

    def _retry_later(self, err: InstallError) -> None:
        self.install_retries += 1
        delay = min(60.0, 2.0 ** min(self.install_retries, 6))
        self.install_not_before = self.clock.monotonic() + delay
        self.record.last_error = f"{err.stage}: {err.message} (retrying in {delay:.0f}s)"
        self.save()
        self.log.info("download_retry", reason=err.message, delay_s=delay)
        asyncio.get_running_loop().call_later(delay, self.post, Poke())

    def _downgrade_refused(self, package: PackageInfo) -> bool:
        """An older version than the active one is installed only when the orchestrator marked
        the desired entry as a rollback; otherwise the version is refused (the app stays)."""
        active, desired = self.record.package, self.agent.desired_app(self.name)
        if active is None or not is_downgrade(active.version, package.version):
            return False
        if desired is not None and desired.rollback:
            return False
        self._refuse(package, f"{package.version} is older than the active {active.version}: a downgrade "
                              "needs the orchestrator's rollback flag", "verify")
        self.save()
        return True

    def _refuse(self, package: PackageInfo, err: InstallError | str, stage: str,
                run: int | None = None) -> None:
        reason = err.message if isinstance(err, InstallError) else err
        self._failed_here(package)
        self.record.last_error = f"{package.version}: {stage}: {reason}"
        self.emit(AppFailed, package, run, reason=reason, stage=stage)
        self.log.warning("version_refused", version=package.version, stage=stage, reason=reason)

    async def _install(self, package: PackageInfo) -> None:
        self.record.attempt = package
        if self.record.state is not S.INSTALLING:
            self._move(S.INSTALLING)
        self._adopt_config()
        self.save()
        try:
            await self._fetch_and_install(package)
        except InstallError as err:
            if err.transient:
                self._retry_later(err)
                return
            self._move(S.FAILED)
            self._refuse(package, err, err.stage)
            self.save()
            return
        self.install_retries = 0
        self.record.package, self.record.attempt = package, None
        self.record.restarts, self.record.crashes, self.record.healthy = 0, (), False
        self._move(S.INSTALLED)
        self.emit(AppInstalled, package)
        self.save()

    async def prepare(self, package: PackageInfo) -> InstalledVersion | None:
        """Download, verify and install `package` beside the active version, which keeps running:
        None if it is refused (reported; an install with nothing active is FAILED) or will be
        retried later (a transient download failure)."""
        if self._downgrade_refused(package):
            return None
        try:
            installed = await self._fetch_and_install(package)
        except InstallError as err:
            if err.transient:
                self._retry_later(err)
            else:
                if self.record.package is None and self.record.state is S.INSTALLING:
                    self._move(S.FAILED)
                self._refuse(package, err, err.stage)
                self.save()
            return None
        self.install_retries = 0
        return installed

    async def _cold_upgrade(self, package: PackageInfo) -> None:
        """Prepare the new version while the old one still runs; a version that fails to download
        or verify never interrupts the running one."""
        if await self.prepare(package) is None:
            return
        self.emit(AppInstalled, package)
        if self.record.state in LIVE or self.record.state is S.STARTING:
            await self._stop()
        old = self.record.package
        self._move(S.INSTALLING)
        self.record.previous, self.record.package = old, package
        self.record.on_trial = old is not None
        self.record.restarts, self.record.crashes, self.record.healthy = 0, (), False
        self.record.last_error = None
        self._adopt_config()
        self._move(S.INSTALLED)
        self.save()
        self.agent.prune_versions(self.name, [p for p in (package, old) if p is not None])

    async def _hot_swap(self, package: PackageInfo) -> None:
        """Start the new version beside the old; the old stops only once the new is healthy."""
        installed = await self.prepare(package)
        if installed is None:
            return
        self.emit(AppInstalled, package)
        try:
            self.candidate = await self.launch(package, installed)
        except OSError as err:
            self._refuse(package, f"cannot start: {err}", "start", self.record.runs)
            self.save()
            return
        self.record.candidate = (self.candidate.process.pid, self.candidate.process.started)
        self.emit(AppStarted, package, self.candidate.run, pid=self.candidate.process.pid)
        self.save()

    # --- processes -----------------------------------------------------------------------------

    def spec_for(self, package: PackageInfo, installed: InstalledVersion) -> RunSpec:
        return RunSpec(
            app=self.name, version=package.version,
            argv=[str(installed.python), "-u", package.entry_point],
            cwd=installed.app_dir, env=self.agent.app_env(self.record, package, installed),
            run_dir=self.agent.run_dir(self.name, package),
            memory_mb=package.resources.memory_mb, cpu=package.resources.cpu,
            sandbox=self.agent.sandbox_for(package),
            digest=package.digest, network=package.security.network,
        )

    async def launch(self, package: PackageInfo, installed: InstalledVersion,
                     adopt: tuple[int, float] | None = None) -> Instance:
        """A new process of `package` (a new run), or the process `adopt` names of an earlier
        agent run (its health is checked again unless it was found healthy then)."""
        spec = self.spec_for(package, installed)
        tail_key = spec.run_dir.name
        if adopt is None:
            self.record.runs += 1
            self.agent.store.reset_tail(f"{self.name}/{tail_key}")
            process: Process | None = await self.agent.runtime_for(package).start(spec)
        else:
            process = self.agent.runtime_for(package).adopt(spec, *adopt)
            if process is None:
                raise ProcessLookupError(adopt[0])
        assert process is not None
        offsets = self.agent.store.tail_offsets(f"{self.name}/{tail_key}")
        follower = self.agent.runtime_for(package).follow_output(
            spec, process, offsets, self.agent.lines_sink(self.name, f"{self.name}/{tail_key}")
        )
        instance = Instance(package, installed, spec, process, follower, self.record.runs,
                            healthy=adopt is not None and self.record.healthy)
        instance.tasks.append(asyncio.create_task(follower.run()))
        instance.tasks.append(asyncio.create_task(self._watch_exit(instance)))
        if not instance.healthy:
            instance.tasks.append(asyncio.create_task(self._check_health(instance)))
        return instance

    async def _watch_exit(self, instance: Instance) -> None:
        code = await instance.process.wait()
        self.post(Exited(instance, code))

    async def _check_health(self, instance: Instance) -> None:
        health = instance.package.health
        if health.command:
            ok, reason = await self.agent.run_health_command(instance.spec, health.command, health.timeout_s,
                                                             instance.process)
            if ok:
                ok = instance.process.alive()
        else:
            await asyncio.sleep(health.alive_for_s)
            ok, reason = instance.process.alive(), "not alive"
        self.post(HealthResult(instance, ok, reason))

    async def _start(self) -> None:
        if self.record.state is not S.STARTING:
            self._move(S.STARTING)
        self.record.healthy = False
        self._adopt_config()
        await self._spawn()

    async def _spawn(self) -> None:
        package = self.record.package
        if package is None:
            self._move(S.FAILED)
            self.record.last_error = "the active version is not installed on the device"
            self.save()
            return
        try:
            # Every start: the description must verify against the signed manifest kept at
            # install (a version gone from disk, or installed without one, is fetched again).
            installed = await self._fetch_and_install(package)
        except InstallError as err:
            if err.transient:
                self._retry_later(err)
                return
            self._move(S.FAILED)
            self._failed_here(package)
            self.record.last_error = f"{package.version}: {err.stage}: {err.message}"
            self.emit(AppFailed, package, reason=err.message, stage=err.stage)
            self.save()
            return
        try:
            self.instance = await self.launch(package, installed)
        except OSError as err:
            reason = f"cannot start: {err}"
            owner = self.agent.sandbox_for(package) if isinstance(err, PermissionError) else None
            if owner is not None and owner.uid is not None:
                reason += (f" (the app runs as uid {owner.uid}: every directory above the agent's data "
                           "directory must be searchable by other users, or set security.sandbox = none)")
            self.log.warning("start_failed", reason=reason)
            if self.record.on_trial and self.record.previous is not None:
                await self._roll_back(f"{package.version} {reason}", self.record.runs)
                return
            self._move(S.FAILED)  # stays FAILED until a new rollout asks again (no tight retry loop)
            self._failed_here(package)
            self.record.last_error = reason
            self.emit(AppFailed, package, self.record.runs, reason=reason, stage="start")
            self.save()
            return
        process = self.instance.process
        self.record.pid, self.record.pid_started = process.pid, process.started
        self.record.started_at = self.clock.wall()
        self._move(S.RUNNING)
        self.emit(AppStarted, package, self.instance.run, pid=process.pid)
        self.save()

    async def _end(self, instance: Instance, timeout_s: float | None = None) -> int | None:
        """Stop an instance on purpose and collect its last console lines."""
        instance.stopping = True
        runtime = self.agent.runtime_for(instance.package)
        code = await runtime.stop(instance.process, timeout_s or self.agent.stop_timeout_s)
        instance.cancel_tasks()
        await self._drain(instance)
        return code

    async def _drain(self, instance: Instance) -> None:
        """The instance's last console lines; a failure to read them (its runtime's engine gone,
        the disk full) is logged and must not keep its end from being handled."""
        try:
            await instance.follower.finish()
        except Exception as exc:
            self.log.warning("console_drain_failed", error=f"{type(exc).__name__}: {exc}")

    async def _stop(self) -> None:
        self.restart_generation += 1
        self.restart_pending = False
        code = None
        if self.instance is not None:
            code = await self._end(self.instance)
            self.instance = None
        self.record.pid = self.record.pid_started = None
        self.record.healthy = False
        self._move(S.STOPPED)
        self.emit(AppStopped, exit_code=code)
        self.save()

    def _pause(self) -> None:
        if self.instance is None:
            return
        self.agent.runtime_for(self.instance.package).pause(self.instance.process)  # may raise: state kept
        self._move(S.PAUSED)
        self.emit(AppPaused)
        self.save()

    def _resume(self) -> None:
        if self.instance is None:
            return
        self.agent.runtime_for(self.instance.package).resume(self.instance.process)
        self._move(S.RUNNING)
        self.emit(AppResumed)
        self.save()

    async def _uninstall(self) -> None:
        shown = self.record.shown
        if self.record.state is not S.UNINSTALLING:
            self._move(S.UNINSTALLING)
            self.save()
        self.agent.remove_app_files(self.name)
        if shown is not None:
            self.emit(AppUninstalled, shown)
        self.agent.store.delete_app(self.name)
        self.record = AppRecord(name=self.name)
        self.agent.changed()
        self.log.info("uninstalled")

    # --- what happens to running processes -----------------------------------------------------

    async def _on_exit(self, instance: Instance, code: int | None) -> None:
        if instance.stopping:
            return
        instance.cancel_tasks()
        await self._drain(instance)
        reason = instance.kill_reason or instance.process.exit_reason() or describe_exit(code)
        if instance is self.candidate:
            await self._swap_failed(f"{instance.package.version} {reason} before it was healthy")
            return
        if instance is not self.instance:
            return
        self.instance = None
        await self._crashed(instance.package, reason, instance.healthy, instance.run)

    async def _crashed(self, package: PackageInfo, reason: str, healthy: bool, run: int) -> None:
        """The active version's process ended on its own (also while no agent ran): a version on
        trial is rolled back; otherwise it restarts with backoff, or a crash loop leaves it FAILED."""
        self.record.pid = self.record.pid_started = None
        self.record.last_error = f"{package.version}: {reason}"
        self.log.warning("app_exited", reason=reason)
        if not healthy and self.record.on_trial and self.record.previous is not None:
            await self._roll_back(f"{package.version} {reason} before it was healthy", run)
            return
        # Wall clock: crash times are kept across reboots, when a monotonic clock starts again.
        decision = after_crash(self.agent.restart_policy, self.record.crashes, self.clock.wall())
        self.record.crashes = decision.crashes
        if isinstance(decision, CrashLoop):
            self._move(S.FAILED)
            self.record.healthy = False
            self._failed_here(package)
            self.record.last_error = f"{decision.reason}; last: {reason}"
            self.emit(AppFailed, package, run, reason=self.record.last_error, stage="run")
            self.save()
            return
        self.record.restarts += 1
        self.record.healthy = False
        self._move(S.STARTING)
        self.save()
        self.restart_generation += 1
        self.restart_pending = True
        generation = self.restart_generation
        self.log.info("restart_scheduled", delay_s=decision.delay_s, restarts=self.record.restarts)
        asyncio.get_running_loop().call_later(decision.delay_s, self.post, RestartDue(generation))

    async def _on_health(self, instance: Instance, ok: bool, reason: str) -> None:
        if instance.stopping:
            return
        if instance is self.candidate:
            if ok:
                await self._swap_done()
            else:
                await self._end(instance)
                await self._swap_failed(f"{instance.package.version} failed its health check: {reason}")
            return
        if instance is not self.instance:
            return
        if not ok:
            # Unhealthy but alive (a failing health command): treat it as a crash.
            self.instance = None
            await self._end(instance)
            self.record.pid = self.record.pid_started = None
            if self.record.on_trial and self.record.previous is not None:
                await self._roll_back(f"{instance.package.version} failed its health check: {reason}",
                                      instance.run)
            else:
                self._move(S.FAILED)
                self.record.last_error = f"health check failed: {reason}"
                self._failed_here(instance.package)
                self.emit(AppFailed, instance.package, instance.run, reason=self.record.last_error,
                           stage="health")
                self.save()
            return
        instance.healthy = True
        self.record.healthy, self.record.healthy_at = True, self.clock.wall()
        self.record.on_trial = False
        self.emit(AppHealthy, instance.package, instance.run)
        self.save()

    async def _roll_back(self, reason: str, run: int) -> None:
        failed, previous = self.record.package, self.record.previous
        assert failed is not None
        assert previous is not None
        self._move(S.FAILED)
        self._refuse(failed, reason, "health", run)
        self.record.package, self.record.previous, self.record.on_trial = previous, None, False
        self.record.restarts, self.record.crashes, self.record.healthy = 0, (), False
        self.emit(AppRolledBack, failed, run, to_version=previous.version, reason=reason)
        self.log.warning("rolled_back", failed=failed.version, to=previous.version, reason=reason)
        await self._start()

    async def _swap_done(self) -> None:
        new = self.candidate
        assert new is not None
        old = self.instance
        self.candidate, self.record.candidate = None, None
        new.healthy = True
        self.emit(AppHealthy, new.package, new.run)
        if old is not None:
            code = await self._end(old)
            self.emit(AppStopped, old.package, exit_code=code)
        self.instance = new
        self.record.previous, self.record.package = (old.package if old else self.record.package), new.package
        self.record.pid, self.record.pid_started = new.process.pid, new.process.started
        self.record.started_at = self.clock.wall()
        self.record.healthy, self.record.on_trial, self.record.last_error = True, False, None
        self.record.healthy_at = self.clock.wall()
        self.record.restarts, self.record.crashes = 0, ()
        self._adopt_config()
        self.save()
        self.agent.prune_versions(self.name, [p for p in (new.package, self.record.previous) if p])
        self.log.info("hot_swapped", to=new.package.version)

    async def _swap_failed(self, reason: str) -> None:
        candidate = self.candidate
        assert candidate is not None
        self.candidate, self.record.candidate = None, None
        self._refuse(candidate.package, reason, "health", candidate.run)
        current = self.record.package
        self.emit(AppRolledBack, candidate.package, candidate.run,
                   to_version=current.version if current else None, reason=reason)
        self.save()

    def check_memory(self) -> None:
        """The RSS watchdog (the fallback when no cgroup enforces the limit)."""
        for instance in (self.instance, self.candidate):
            if instance is None or instance.stopping or instance.kill_reason:
                continue
            instance.usage = self.agent.runtime_for(instance.package).usage(instance.process)
            limit = instance.package.resources.memory_mb
            if instance.usage is not None and instance.usage.rss_bytes > limit * MB:
                instance.kill_reason = (f"memory limit exceeded: rss {instance.usage.rss_bytes // MB} MB "
                                        f"> {limit} MB")
                self.log.warning("memory_limit_exceeded", rss_mb=instance.usage.rss_bytes // MB,
                                 limit_mb=limit)
                self.agent.runtime_for(instance.package).kill(instance.process)

    # --- interactive ops -----------------------------------------------------------------------

    async def _op(self, op: str, data: bytes) -> None:
        state = self.record.state
        if state is None:
            raise OpRefused(f"{self.name} is not installed")
        desired = self.agent.desired_app(self.name)
        wants_running = desired is not None and desired.state == "running"
        if op == "pause":
            transition(self.name, state, S.PAUSED)
            self.record.held = "paused"
            self._pause()
        elif op == "resume":
            transition(self.name, state, S.RUNNING)
            self.record.held = None if wants_running else "running"
            self._resume()
        elif op == "stop":
            transition(self.name, state, S.STOPPED)
            self.record.held = "stopped"
            await self._stop()
        elif op == "start":
            if state not in (S.INSTALLED, S.STOPPED, S.FAILED):
                raise OpRefused(f"{self.name} is {state.value}: only an installed, stopped or failed app "
                                "can be started (use restart)")
            transition(self.name, state, S.STARTING)
            self.record.held = None if wants_running else "running"
            self.record.crashes, self.record.failed_digest, self.record.failed_rollout = (), None, None
            await self._start()
        elif op == "restart":
            if state in LIVE:
                await self._stop()
            transition(self.name, self.record.state, S.STARTING)
            self.record.held = None if wants_running else "running"
            self.record.crashes, self.record.failed_digest, self.record.failed_rollout = (), None, None
            await self._start()
        elif op == "stdin":
            if self.instance is None:
                raise OpRefused(f"{self.name} is {state.value}: no process to write to")
            try:
                self.instance.process.write_stdin(data)
            except Exception as exc:
                raise OpRefused(str(exc)) from None
        else:
            raise OpRefused(f"unknown op {op!r}")
        self.save()


class OpRefused(DomainError):
    """An op that cannot apply to the app as it is now (the reply's code is `op_refused`)."""

    code = "op_refused"
