"""Getting a version onto the device for an app: download, verify and install it (with a later
retry after a transient download failure), or refuse it (reported, not tried again for the
rollout)."""

from __future__ import annotations

import asyncio

from sdv_edge_agent.adapters.packages import InstalledVersion, InstallError
from sdv_edge_agent.app_inbox import Poke
from sdv_edge_agent.domain.admission import is_downgrade
from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.supervision.core import AppCore
from sdv_events.schemas.agent import AppDownloadStarted
from sdv_events.schemas.packages import PackageInfo

S = AppState


async def fetch_and_install(app: AppCore, package: PackageInfo) -> InstalledVersion:
    if package.runtime not in app.agent.runtimes:
        # Whether the device has no such runtime or its engine did not come up with the agent.
        raise InstallError("install", f"needs the {package.runtime} runtime; the "
                                      f"{package.runtime} runtime is not available on this device "
                                      f"(it runs {', '.join(sorted(app.agent.runtimes))} apps only)")
    if package.python_version != app.agent.python_version:
        raise InstallError("install", f"needs Python {package.python_version}; this device has "
                                      f"{app.agent.python_version}")
    installed = app.agent.installer.installed(package)
    if installed is None:
        app.emit(AppDownloadStarted, package, size=package.size)
        artifact = await app.agent.download(package)
        installed = await app.agent.installer.install(package, artifact)
    else:  # already here (same digest): the description must still be what was signed
        problem = app.agent.installer.signed_problem(package)
        if problem is not None:
            raise InstallError("verify", problem)
    # The runtime's part of the install (a container image): failing it fails the install.
    await app.agent.runtime_for(package).prepare(package, installed.app_dir)
    return installed


def retry_later(app: AppCore, err: InstallError) -> None:
    app.install_retries += 1
    delay = min(60.0, 2.0 ** min(app.install_retries, 6))
    app.install_not_before = app.clock.monotonic() + delay
    app.record.last_error = f"{err.stage}: {err.message} (retrying in {delay:.0f}s)"
    app.save()
    app.log.info("download_retry", reason=err.message, delay_s=delay)
    asyncio.get_running_loop().call_later(delay, app.post, Poke())


def downgrade_refused(app: AppCore, package: PackageInfo) -> bool:
    """An older version than the active one is installed only when the orchestrator marked
    the desired entry as a rollback; otherwise the version is refused (the app stays)."""
    active, desired = app.record.package, app.agent.desired_app(app.name)
    if active is None or not is_downgrade(active.version, package.version):
        return False
    if desired is not None and desired.rollback:
        return False
    app.refuse(package, f"{package.version} is older than the active {active.version}: a downgrade "
                          "needs the orchestrator's rollback flag", "verify")
    app.save()
    return True


async def prepare(app: AppCore, package: PackageInfo) -> InstalledVersion | None:
    """Download, verify and install `package` beside the active version, which keeps running:
    None if it is refused (reported; an install with nothing active is FAILED) or will be
    retried later (a transient download failure)."""
    if downgrade_refused(app, package):
        return None
    try:
        installed = await fetch_and_install(app, package)
    except InstallError as err:
        if err.transient:
            retry_later(app, err)
        else:
            if app.record.package is None and app.record.state is S.INSTALLING:
                app.move(S.FAILED)
            app.refuse(package, err, err.stage)
            app.save()
        return None
    app.install_retries = 0
    return installed
