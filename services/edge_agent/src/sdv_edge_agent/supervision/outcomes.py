"""What happens to running processes: an instance ended or answered its health check. A crash
restarts with backoff or, looping, leaves the app FAILED; a version on trial that fails is
rolled back; a hot-swap candidate's result ends the swap."""

from __future__ import annotations

import asyncio

from sdv_edge_agent.app_inbox import Instance, RestartDue, describe_exit
from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.restarts import CrashLoop, after_crash
from sdv_edge_agent.supervision import instances, upgrade
from sdv_edge_agent.supervision.core import AppCore
from sdv_events.schemas.agent import AppFailed, AppHealthy
from sdv_events.schemas.packages import PackageInfo

S = AppState


async def on_exit(app: AppCore, instance: Instance, code: int | None) -> None:
    if instance.stopping:
        return
    instance.cancel_tasks()
    await instances.drain(app, instance)
    reason = instance.kill_reason or instance.process.exit_reason() or describe_exit(code)
    if instance is app.candidate:
        await upgrade.swap_failed(app, f"{instance.package.version} {reason} before it was healthy")
        return
    if instance is not app.instance:
        return
    app.instance = None
    await crashed(app, instance.package, reason, instance.healthy, instance.run)


async def crashed(app: AppCore, package: PackageInfo, reason: str, healthy: bool, run: int) -> None:
    """The active version's process ended on its own (also while no agent ran): a version on
    trial is rolled back; otherwise it restarts with backoff, or a crash loop leaves it FAILED."""
    app.record.pid = app.record.pid_started = None
    app.record.last_error = f"{package.version}: {reason}"
    app.log.warning("app_exited", reason=reason)
    if not healthy and app.record.on_trial and app.record.previous is not None:
        await instances.roll_back(app, f"{package.version} {reason} before it was healthy", run)
        return
    # Wall clock: crash times are kept across reboots, when a monotonic clock starts again.
    decision = after_crash(app.agent.restart_policy, app.record.crashes, app.clock.wall())
    app.record.crashes = decision.crashes
    if isinstance(decision, CrashLoop):
        app.move(S.FAILED)
        app.record.healthy = False
        app.failed_here(package)
        app.record.last_error = f"{decision.reason}; last: {reason}"
        app.emit(AppFailed, package, run, reason=app.record.last_error, stage="run")
        app.save()
        return
    app.record.restarts += 1
    app.record.healthy = False
    app.move(S.STARTING)
    app.save()
    app.restart_generation += 1
    app.restart_pending = True
    generation = app.restart_generation
    app.log.info("restart_scheduled", delay_s=decision.delay_s, restarts=app.record.restarts)
    asyncio.get_running_loop().call_later(decision.delay_s, app.post, RestartDue(generation))


async def on_health(app: AppCore, instance: Instance, ok: bool, reason: str) -> None:
    if instance.stopping:
        return
    if instance is app.candidate:
        if ok:
            await upgrade.swap_done(app)
        else:
            await instances.end(app, instance)
            await upgrade.swap_failed(app, f"{instance.package.version} failed its health check: {reason}")
        return
    if instance is not app.instance:
        return
    if not ok:
        # Unhealthy but alive (a failing health command): treat it as a crash.
        app.instance = None
        await instances.end(app, instance)
        app.record.pid = app.record.pid_started = None
        if app.record.on_trial and app.record.previous is not None:
            await instances.roll_back(app, f"{instance.package.version} failed its health check: {reason}",
                                  instance.run)
        else:
            app.move(S.FAILED)
            app.record.last_error = f"health check failed: {reason}"
            app.failed_here(instance.package)
            app.emit(AppFailed, instance.package, instance.run, reason=app.record.last_error,
                       stage="health")
            app.save()
        return
    instance.healthy = True
    app.record.healthy, app.record.healthy_at = True, app.clock.wall()
    app.record.on_trial = False
    app.emit(AppHealthy, instance.package, instance.run)
    app.save()
