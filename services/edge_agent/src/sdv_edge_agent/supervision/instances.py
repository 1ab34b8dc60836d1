"""An app's instances (processes): launching one, watching it end and checking its health,
starting, stopping, pausing and resuming the active version, rolling back to the previous
one, uninstalling, and the RSS watchdog."""

from __future__ import annotations

import asyncio

from sdv_edge_agent.adapters.packages import InstalledVersion, InstallError
from sdv_edge_agent.app_inbox import Exited, HealthResult, Instance
from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.records import AppRecord
from sdv_edge_agent.ports import Process, RunSpec
from sdv_edge_agent.supervision import installing
from sdv_edge_agent.supervision.core import AppCore
from sdv_events.schemas.agent import (
    AppFailed,
    AppPaused,
    AppResumed,
    AppRolledBack,
    AppStarted,
    AppStopped,
    AppUninstalled,
)
from sdv_events.schemas.packages import PackageInfo

S = AppState
MB = 1024 * 1024


def spec_for(app: AppCore, package: PackageInfo, installed: InstalledVersion) -> RunSpec:
    return RunSpec(
        app=app.name, version=package.version,
        argv=[str(installed.python), "-u", package.entry_point],
        cwd=installed.app_dir, env=app.agent.app_env(app.record, package, installed),
        run_dir=app.agent.run_dir(app.name, package),
        memory_mb=package.resources.memory_mb, cpu=package.resources.cpu,
        sandbox=app.agent.sandbox_for(package),
        digest=package.digest, network=package.security.network,
    )


async def launch(app: AppCore, package: PackageInfo, installed: InstalledVersion,
                 adopt: tuple[int, float] | None = None) -> Instance:
    """A new process of `package` (a new run), or the process `adopt` names of an earlier
    agent run (its health is checked again unless it was found healthy then)."""
    spec = spec_for(app, package, installed)
    tail_key = spec.run_dir.name
    if adopt is None:
        app.record.runs += 1
        app.agent.store.reset_tail(f"{app.name}/{tail_key}")
        process: Process | None = await app.agent.runtime_for(package).start(spec)
    else:
        process = app.agent.runtime_for(package).adopt(spec, *adopt)
        if process is None:
            raise ProcessLookupError(adopt[0])
    assert process is not None
    offsets = app.agent.store.tail_offsets(f"{app.name}/{tail_key}")
    follower = app.agent.runtime_for(package).follow_output(
        spec, process, offsets, app.agent.lines_sink(app.name, f"{app.name}/{tail_key}")
    )
    instance = Instance(package, installed, spec, process, follower, app.record.runs,
                        healthy=adopt is not None and app.record.healthy)
    instance.tasks.append(asyncio.create_task(follower.run()))
    instance.tasks.append(asyncio.create_task(watch_exit(app, instance)))
    if not instance.healthy:
        instance.tasks.append(asyncio.create_task(check_health(app, instance)))
    return instance


async def watch_exit(app: AppCore, instance: Instance) -> None:
    code = await instance.process.wait()
    app.post(Exited(instance, code))


async def check_health(app: AppCore, instance: Instance) -> None:
    health = instance.package.health
    if health.command:
        ok, reason = await app.agent.run_health_command(instance.spec, health.command, health.timeout_s,
                                                         instance.process)
        if ok:
            ok = instance.process.alive()
    else:
        await asyncio.sleep(health.alive_for_s)
        ok, reason = instance.process.alive(), "not alive"
    app.post(HealthResult(instance, ok, reason))


async def start(app: AppCore) -> None:
    if app.record.state is not S.STARTING:
        app.move(S.STARTING)
    app.record.healthy = False
    app.adopt_config()
    await spawn(app)


async def spawn(app: AppCore) -> None:
    package = app.record.package
    if package is None:
        app.move(S.FAILED)
        app.record.last_error = "the active version is not installed on the device"
        app.save()
        return
    try:
        # Every start: the description must verify against the signed manifest kept at
        # install (a version gone from disk, or installed without one, is fetched again).
        installed = await installing.fetch_and_install(app, package)
    except InstallError as err:
        if err.transient:
            installing.retry_later(app, err)
            return
        app.move(S.FAILED)
        app.failed_here(package)
        app.record.last_error = f"{package.version}: {err.stage}: {err.message}"
        app.emit(AppFailed, package, reason=err.message, stage=err.stage)
        app.save()
        return
    try:
        app.instance = await launch(app, package, installed)
    except OSError as err:
        reason = f"cannot start: {err}"
        owner = app.agent.sandbox_for(package) if isinstance(err, PermissionError) else None
        if owner is not None and owner.uid is not None:
            reason += (f" (the app runs as uid {owner.uid}: every directory above the agent's data "
                       "directory must be searchable by other users, or set security.sandbox = none)")
        app.log.warning("start_failed", reason=reason)
        if app.record.on_trial and app.record.previous is not None:
            await roll_back(app, f"{package.version} {reason}", app.record.runs)
            return
        app.move(S.FAILED)  # stays FAILED until a new rollout asks again (no tight retry loop)
        app.failed_here(package)
        app.record.last_error = reason
        app.emit(AppFailed, package, app.record.runs, reason=reason, stage="start")
        app.save()
        return
    process = app.instance.process
    app.record.pid, app.record.pid_started = process.pid, process.started
    app.record.started_at = app.clock.wall()
    app.move(S.RUNNING)
    app.emit(AppStarted, package, app.instance.run, pid=process.pid)
    app.save()


async def end(app: AppCore, instance: Instance, timeout_s: float | None = None) -> int | None:
    """Stop an instance on purpose and collect its last console lines."""
    instance.stopping = True
    runtime = app.agent.runtime_for(instance.package)
    code = await runtime.stop(instance.process, timeout_s or app.agent.stop_timeout_s)
    instance.cancel_tasks()
    await drain(app, instance)
    return code


async def drain(app: AppCore, instance: Instance) -> None:
    """The instance's last console lines; a failure to read them (its runtime's engine gone,
    the disk full) is logged and must not keep its end from being handled."""
    try:
        await instance.follower.finish()
    except Exception as exc:
        app.log.warning("console_drain_failed", error=f"{type(exc).__name__}: {exc}")


async def stop(app: AppCore) -> None:
    app.restart_generation += 1
    app.restart_pending = False
    code = None
    if app.instance is not None:
        code = await end(app, app.instance)
        app.instance = None
    app.record.pid = app.record.pid_started = None
    app.record.healthy = False
    app.move(S.STOPPED)
    app.emit(AppStopped, exit_code=code)
    app.save()


def pause(app: AppCore) -> None:
    if app.instance is None:
        return
    app.agent.runtime_for(app.instance.package).pause(app.instance.process)  # may raise: state kept
    app.move(S.PAUSED)
    app.emit(AppPaused)
    app.save()


def resume(app: AppCore) -> None:
    if app.instance is None:
        return
    app.agent.runtime_for(app.instance.package).resume(app.instance.process)
    app.move(S.RUNNING)
    app.emit(AppResumed)
    app.save()


async def uninstall(app: AppCore) -> None:
    shown = app.record.shown
    if app.record.state is not S.UNINSTALLING:
        app.move(S.UNINSTALLING)
        app.save()
    app.agent.remove_app_files(app.name)
    if shown is not None:
        app.emit(AppUninstalled, shown)
    app.agent.store.delete_app(app.name)
    app.record = AppRecord(name=app.name)
    app.agent.changed()
    app.log.info("uninstalled")


async def roll_back(app: AppCore, reason: str, run: int) -> None:
    failed, previous = app.record.package, app.record.previous
    assert failed is not None
    assert previous is not None
    app.move(S.FAILED)
    app.refuse(failed, reason, "health", run)
    app.record.package, app.record.previous, app.record.on_trial = previous, None, False
    app.record.restarts, app.record.crashes, app.record.healthy = 0, (), False
    app.emit(AppRolledBack, failed, run, to_version=previous.version, reason=reason)
    app.log.warning("rolled_back", failed=failed.version, to=previous.version, reason=reason)
    await start(app)


def check_memory(app: AppCore) -> None:
    """The RSS watchdog (the fallback when no cgroup enforces the limit)."""
    for instance in (app.instance, app.candidate):
        if instance is None or instance.stopping or instance.kill_reason:
            continue
        instance.usage = app.agent.runtime_for(instance.package).usage(instance.process)
        limit = instance.package.resources.memory_mb
        if instance.usage is not None and instance.usage.rss_bytes > limit * MB:
            instance.kill_reason = (f"memory limit exceeded: rss {instance.usage.rss_bytes // MB} MB "
                                    f"> {limit} MB")
            app.log.warning("memory_limit_exceeded", rss_mb=instance.usage.rss_bytes // MB,
                             limit_mb=limit)
            app.agent.runtime_for(instance.package).kill(instance.process)
