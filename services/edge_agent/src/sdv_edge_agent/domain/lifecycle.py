"""The lifecycle of one app on one device, as a state machine that refuses illegal moves.

    INSTALLING → INSTALLED → STARTING → RUNNING ⇄ PAUSED → STOPPED → UNINSTALLING, plus FAILED

Beyond the happy path an operator expects: a crashed (or restarted) app goes back to STARTING (with
backoff) or to FAILED (crash loop); a stopped or failed app can be started again, re-installed
(upgrade) or uninstalled; an installed app can be upgraded before it ever ran. UNINSTALLING ends
in removal, which is not a state: the app's record is gone.
"""

from __future__ import annotations

from enum import StrEnum

from sdv_events.errors import DomainError


class AppState(StrEnum):
    INSTALLING = "INSTALLING"
    INSTALLED = "INSTALLED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"
    UNINSTALLING = "UNINSTALLING"
    FAILED = "FAILED"


S = AppState
# None = the app is not on the device (before its first install, after its uninstall).
TRANSITIONS: dict[AppState | None, frozenset[AppState]] = {
    None: frozenset({S.INSTALLING}),
    S.INSTALLING: frozenset({S.INSTALLED, S.FAILED}),
    S.INSTALLED: frozenset({S.STARTING, S.INSTALLING, S.UNINSTALLING}),
    S.STARTING: frozenset({S.RUNNING, S.STOPPED, S.FAILED}),
    S.RUNNING: frozenset({S.PAUSED, S.STOPPED, S.STARTING, S.FAILED}),
    S.PAUSED: frozenset({S.RUNNING, S.STOPPED, S.STARTING, S.FAILED}),
    S.STOPPED: frozenset({S.STARTING, S.INSTALLING, S.UNINSTALLING}),
    S.FAILED: frozenset({S.STARTING, S.INSTALLING, S.STOPPED, S.UNINSTALLING}),
    S.UNINSTALLING: frozenset(),
}
# The process exists (running or frozen): what a stop, a crash or a kill applies to.
LIVE = frozenset({S.RUNNING, S.PAUSED})


class IllegalTransition(DomainError):
    """An operation asked for a move the lifecycle does not allow; nothing was changed."""

    code = "illegal_transition"

    def __init__(self, app: str, current: AppState | None, target: AppState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing (the app is being removed)"
        where = current.value if current is not None else "not installed"
        super().__init__(f"{app}: cannot go from {where} to {target.value}; allowed: {allowed}")
        self.app = app
        self.current = current
        self.target = target


def allowed(current: AppState | None, target: AppState) -> bool:
    return target in TRANSITIONS[current]


def transition(app: str, current: AppState | None, target: AppState) -> AppState:
    """`target` if the lifecycle allows `current → target`, else `IllegalTransition`."""
    if not allowed(current, target):
        raise IllegalTransition(app, current, target)
    return target


def can_be_removed(current: AppState | None) -> bool:
    """Removal (the record disappears) ends UNINSTALLING and nothing else."""
    return current is S.UNINSTALLING
