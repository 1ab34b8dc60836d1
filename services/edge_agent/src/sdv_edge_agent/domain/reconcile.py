"""The reconcile decision: given what one app should be and what it is, the next step to take.

Level-triggered: the decision looks only at the newest desired document and the local state, never
at the history of documents, so a device that was offline for an hour goes straight to the newest
desired version without replaying the steps it missed. The caller takes the step, updates the local
state, and asks again until the answer is `Idle` (or `AwaitActivation`: a staged version waits
for its gates or hold, see domain/activation.py, while the active one stays as it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sdv_edge_agent.domain.activation import (
    ActivationKey,
    AwaitActivation,
    Stage,
    Unstage,
    activation_step,
    stale_stage,
)
from sdv_edge_agent.domain.lifecycle import LIVE, AppState
from sdv_events.schemas.deployment import DesiredApp, RunState
from sdv_events.schemas.packages import PackageInfo

S = AppState


@dataclass(frozen=True)
class LocalApp:
    """What the agent knows of one app on this device."""

    name: str
    state: AppState | None
    digest: str | None = None  # the active version's artifact digest
    alive: bool = False  # its process exists (running or frozen)
    # A version that failed here for this rollout is not retried until the rollout changes.
    failed_digest: str | None = None
    failed_rollout: str | None = None
    # An interactive op (pause/stop) holds the app in that state until the desired state changes.
    held: RunState | None = None
    # Download now, activate later (domain/activation.py): the digest downloaded and verified
    # beside the active version, and the activation whose gates were seen holding.
    staged: str | None = None
    released: ActivationKey | None = None


@dataclass(frozen=True)
class Install:
    """First install, or resuming an install that was interrupted."""

    package: PackageInfo


@dataclass(frozen=True)
class Upgrade:
    """Replace the active version. `hot`: start the new one beside the old, swap when healthy."""

    package: PackageInfo
    hot: bool


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Uninstall:
    pass


@dataclass(frozen=True)
class Idle:
    reason: Literal["converged", "absent", "failed", "blocked", "busy"]


Step = (Install | Upgrade | Start | Pause | Resume | Stop | Uninstall | Idle
        | Stage | Unstage | AwaitActivation)


def refused(desired: DesiredApp, local: LocalApp) -> bool:
    """This exact version already failed here for this rollout: do not loop on it."""
    return local.failed_digest == desired.package.digest and local.failed_rollout == desired.rollout_id


def run_state(desired: DesiredApp, local: LocalApp) -> RunState:
    return local.held or desired.state


def next_step(desired: DesiredApp | None, local: LocalApp) -> Step:
    state = local.state
    if desired is None:
        if state is None:
            return Idle("absent")
        if state in LIVE or state is S.STARTING:
            return Stop()
        return Uninstall()
    if state is S.UNINSTALLING:
        return Uninstall()  # an interrupted uninstall finishes before anything new is installed
    if stale_stage(desired, local.staged):
        return Unstage()
    if desired.package.digest != local.digest:
        if refused(desired, local):
            # Stay on what runs (a rolled-back version, or nothing): a new rollout may retry.
            if local.digest is None:
                return Idle("blocked")
        elif (wait := activation_step(desired, local.staged, local.released)) is not None:
            return _meanwhile(local) or wait
        elif state is None or local.digest is None:
            return Install(desired.package)
        else:
            hot = desired.package.hot_swap and state is S.RUNNING and local.alive
            return Upgrade(desired.package, hot=hot)
    if state is S.INSTALLING:
        return Install(desired.package)
    return _run(run_state(desired, local), local, refused(desired, local))


def _meanwhile(local: LocalApp) -> Start | None:
    """While a new version is staged or waits for its activation, the active one is left as it
    is: only a process that vanished while no agent ran is started again (a crash is restarted by
    the supervisor's own timer, a crash loop stays failed)."""
    if local.digest is None or local.alive or local.failed_digest == local.digest:
        return None
    return Start() if local.state in LIVE or local.state is S.STARTING else None


def _run(wanted: RunState, local: LocalApp, refused_here: bool) -> Step:
    state = local.state
    if state is S.FAILED and (refused_here or wanted == "stopped"):
        return Idle("failed")  # a crash loop stays failed until a new rollout asks again
    if wanted == "stopped":
        return Stop() if state in LIVE or state is S.STARTING else Idle("converged")
    if state in (S.INSTALLED, S.STOPPED, S.FAILED) or (state in LIVE | {S.STARTING} and not local.alive):
        return Start()  # also restarts an app whose process vanished while the agent was away
    if state is S.STARTING:
        return Idle("busy")
    if wanted == "paused":
        return Pause() if state is S.RUNNING else Idle("converged")
    return Resume() if state is S.PAUSED else Idle("converged")
