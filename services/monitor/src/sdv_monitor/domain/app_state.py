"""What a device's fact says about one app on it: pure, no I/O (the inventory read model
applies the result). States follow the agent's lifecycle (`LifecycleState`)."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class AppChange:
    """Columns to set; None leaves a column as it is. `installed` True sets the installed
    version and digest from the fact; `removed` deletes what the device had installed."""

    state: str
    healthy: bool | None = None
    installed: bool = False
    last_error: str | None = None
    clear_error: bool = False
    removed: bool = False
    installed_version: str | None = None  # overrides the fact's version (a rollback names its target)
    action: str = ""  # one line for the device's history


def text(value: str, limit: int = 500) -> str:
    """A device's words as a text column can hold them: no NUL, bounded."""
    return value.replace("\x00", "\ufffd")[:limit]


def change_of(fact: AppFact) -> AppChange | None:
    v = fact.version
    match fact:
        case AppDownloadStarted(size=size):
            return AppChange("INSTALLING", action=f"download of {v} started ({size} bytes)")
        case AppInstalled():
            return AppChange("INSTALLED", installed=True, action=f"{v} installed")
        case AppStarted(pid=pid):
            return AppChange("STARTING", installed=True, action=f"{v} started (pid {pid})")
        case AppHealthy():
            return AppChange("RUNNING", healthy=True, installed=True, clear_error=True,
                             action=f"{v} healthy")
        case AppAlreadyCurrent():  # a desired document naming what already runs, healthy
            return AppChange("RUNNING", healthy=True, installed=True, clear_error=True,
                             action=f"{v} already running, healthy")
        case AppFailed(reason=raw_reason, stage=raw_stage):
            reason, stage = text(raw_reason), text(raw_stage, 32)
            return AppChange("FAILED", healthy=False, last_error=f"{stage}: {reason}",
                             action=f"{v} failed at {stage}: {reason}")
        case AppRolledBack(to_version=raw_to, reason=raw_reason):
            to, reason = raw_to and text(raw_to, 64), text(raw_reason)
            return AppChange("RUNNING" if to else "STOPPED", healthy=False, installed=to is not None,
                             installed_version=to, last_error=f"rolled back: {reason}",
                             removed=to is None, action=f"{v} rolled back to {to or 'nothing'}: {reason}")
        case AppPaused():
            return AppChange("PAUSED", healthy=False, action=f"{v} paused")
        case AppResumed():
            return AppChange("RUNNING", action=f"{v} resumed")
        case AppStopped(exit_code=code):
            return AppChange("STOPPED", healthy=False, action=f"{v} stopped (exit code {code})")
        case AppUninstalled():
            return AppChange("UNINSTALLED", healthy=False, removed=True, action=f"{v} uninstalled")
    return None
