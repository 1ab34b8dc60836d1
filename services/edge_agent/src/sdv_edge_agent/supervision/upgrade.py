"""Installing an app and moving it to a new version: the first install, a cold upgrade (the old
version stops, the new one starts on trial) and a hot swap (the new version starts beside the
old, which stops only once the new one is healthy)."""

from __future__ import annotations

from sdv_edge_agent.adapters.packages import InstallError
from sdv_edge_agent.domain.lifecycle import LIVE, AppState
from sdv_edge_agent.supervision import installing, instances
from sdv_edge_agent.supervision.core import AppCore
from sdv_events.schemas.agent import AppHealthy, AppInstalled, AppRolledBack, AppStarted, AppStopped
from sdv_events.schemas.packages import PackageInfo

S = AppState


async def install(app: AppCore, package: PackageInfo) -> None:
    app.record.attempt = package
    if app.record.state is not S.INSTALLING:
        app.move(S.INSTALLING)
    app.adopt_config()
    app.save()
    try:
        await installing.fetch_and_install(app, package)
    except InstallError as err:
        if err.transient:
            installing.retry_later(app, err)
            return
        app.move(S.FAILED)
        app.refuse(package, err, err.stage)
        app.save()
        return
    app.install_retries = 0
    app.record.package, app.record.attempt = package, None
    app.record.restarts, app.record.crashes, app.record.healthy = 0, (), False
    app.move(S.INSTALLED)
    app.emit(AppInstalled, package)
    app.save()


async def cold_upgrade(app: AppCore, package: PackageInfo) -> None:
    """Prepare the new version while the old one still runs; a version that fails to download
    or verify never interrupts the running one."""
    if await installing.prepare(app, package) is None:
        return
    app.emit(AppInstalled, package)
    if app.record.state in LIVE or app.record.state is S.STARTING:
        await instances.stop(app)
    old = app.record.package
    app.move(S.INSTALLING)
    app.record.previous, app.record.package = old, package
    app.record.on_trial = old is not None
    app.record.restarts, app.record.crashes, app.record.healthy = 0, (), False
    app.record.last_error = None
    app.adopt_config()
    app.move(S.INSTALLED)
    app.save()
    app.agent.prune_versions(app.name, [p for p in (package, old) if p is not None])


async def hot_swap(app: AppCore, package: PackageInfo) -> None:
    """Start the new version beside the old; the old stops only once the new is healthy."""
    installed = await installing.prepare(app, package)
    if installed is None:
        return
    app.emit(AppInstalled, package)
    try:
        app.candidate = await instances.launch(app, package, installed)
    except OSError as err:
        app.refuse(package, f"cannot start: {err}", "start", app.record.runs)
        app.save()
        return
    app.record.candidate = (app.candidate.process.pid, app.candidate.process.started)
    app.emit(AppStarted, package, app.candidate.run, pid=app.candidate.process.pid)
    app.save()


async def swap_done(app: AppCore) -> None:
    new = app.candidate
    assert new is not None
    old = app.instance
    app.candidate, app.record.candidate = None, None
    new.healthy = True
    app.emit(AppHealthy, new.package, new.run)
    if old is not None:
        code = await instances.end(app, old)
        app.emit(AppStopped, old.package, exit_code=code)
    app.instance = new
    app.record.previous, app.record.package = (old.package if old else app.record.package), new.package
    app.record.pid, app.record.pid_started = new.process.pid, new.process.started
    app.record.started_at = app.clock.wall()
    app.record.healthy, app.record.on_trial, app.record.last_error = True, False, None
    app.record.healthy_at = app.clock.wall()
    app.record.restarts, app.record.crashes = 0, ()
    app.adopt_config()
    app.save()
    app.agent.prune_versions(app.name, [p for p in (new.package, app.record.previous) if p])
    app.log.info("hot_swapped", to=new.package.version)


async def swap_failed(app: AppCore, reason: str) -> None:
    candidate = app.candidate
    assert candidate is not None
    app.candidate, app.record.candidate = None, None
    app.refuse(candidate.package, reason, "health", candidate.run)
    current = app.record.package
    app.emit(AppRolledBack, candidate.package, candidate.run,
               to_version=current.version if current else None, reason=reason)
    app.save()
