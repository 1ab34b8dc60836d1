"""The reconcile decision: desired app + local app → the next step."""

from __future__ import annotations

import pytest

from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.reconcile import (
    Idle,
    Install,
    LocalApp,
    Pause,
    Resume,
    Start,
    Stop,
    Uninstall,
    Upgrade,
    next_step,
)
from sdv_events.schemas.deployment import DesiredApp, RunState
from sdv_events.schemas.packages import PackageInfo

S = AppState
V1, V2 = "1" * 64, "2" * 64


def package(digest: str = V1, *, hot_swap: bool = False) -> PackageInfo:
    return PackageInfo(
        name="app", version="1.0.0" if digest == V1 else "2.0.0", digest=digest, size=1,
        object_name=digest, manifest_digest="m", signature="s", key_id="k", channel="dev",
        runtime="native", entry_point="main.py", python_version="3.11", hot_swap=hot_swap,
    )


def want(digest: str = V1, state: RunState = "running", *, hot_swap: bool = False,
         rollout: str | None = "r1") -> DesiredApp:
    return DesiredApp(package=package(digest, hot_swap=hot_swap), state=state, rollout_id=rollout)


def local(state: AppState | None, digest: str | None = V1, *, alive: bool | None = None, **kw: object) -> LocalApp:
    live = state in (S.RUNNING, S.PAUSED) if alive is None else alive
    return LocalApp("app", state, digest if state is not None else None, live, **kw)  # type: ignore[arg-type]


def test_absent_app_is_installed() -> None:
    assert next_step(want(), local(None)) == Install(package())


def test_an_interrupted_install_is_resumed() -> None:
    assert next_step(want(), local(S.INSTALLING)) == Install(package())


@pytest.mark.parametrize(("state", "alive", "step"), [
    (S.INSTALLED, False, Start()),
    (S.STOPPED, False, Start()),
    (S.STARTING, False, Start()),  # the agent restarted mid-start: start again
    (S.STARTING, True, Idle("busy")),
    (S.RUNNING, True, Idle("converged")),
    (S.RUNNING, False, Start()),  # the process vanished while the agent was away
    (S.PAUSED, True, Resume()),
    (S.PAUSED, False, Start()),
])
def test_desired_running(state: AppState, alive: bool, step: object) -> None:
    assert next_step(want(), local(state, alive=alive)) == step


@pytest.mark.parametrize(("state", "step"), [
    (S.RUNNING, Pause()), (S.PAUSED, Idle("converged")), (S.INSTALLED, Start()), (S.STOPPED, Start()),
])
def test_desired_paused(state: AppState, step: object) -> None:
    assert next_step(want(state="paused"), local(state)) == step


@pytest.mark.parametrize(("state", "alive", "step"), [
    (S.RUNNING, True, Stop()), (S.PAUSED, True, Stop()), (S.STARTING, True, Stop()),
    (S.STOPPED, False, Idle("converged")), (S.INSTALLED, False, Idle("converged")),
    (S.FAILED, False, Idle("failed")),
])
def test_desired_stopped(state: AppState, alive: bool, step: object) -> None:
    assert next_step(want(state="stopped"), local(state, alive=alive)) == step


@pytest.mark.parametrize(("state", "step"), [
    (None, Idle("absent")), (S.RUNNING, Stop()), (S.PAUSED, Stop()), (S.STARTING, Stop()),
    (S.STOPPED, Uninstall()), (S.INSTALLED, Uninstall()), (S.FAILED, Uninstall()),
    (S.UNINSTALLING, Uninstall()), (S.INSTALLING, Uninstall()),
])
def test_not_desired_is_stopped_then_uninstalled(state: AppState | None, step: object) -> None:
    assert next_step(None, local(state)) == step


def test_an_interrupted_uninstall_finishes_before_a_new_install() -> None:
    assert next_step(want(V2), local(S.UNINSTALLING)) == Uninstall()


def test_new_version_is_an_upgrade_cold_unless_both_sides_allow_hot_swap() -> None:
    assert next_step(want(V2), local(S.RUNNING)) == Upgrade(package(V2), hot=False)
    assert next_step(want(V2, hot_swap=True), local(S.RUNNING)) == Upgrade(package(V2, hot_swap=True), hot=True)
    # Hot swap needs a live old version to overlap with.
    assert next_step(want(V2, hot_swap=True), local(S.STOPPED)) == Upgrade(package(V2, hot_swap=True), hot=False)
    assert next_step(want(V2, hot_swap=True), local(S.PAUSED)) == Upgrade(package(V2, hot_swap=True), hot=False)
    assert next_step(want(V2), local(S.FAILED)) == Upgrade(package(V2), hot=False)


def test_a_version_that_failed_here_is_not_retried_within_the_same_rollout() -> None:
    rolled_back = local(S.RUNNING, V1, failed_digest=V2, failed_rollout="r1")
    assert next_step(want(V2, rollout="r1"), rolled_back) == Idle("converged")  # v1 keeps running
    assert next_step(want(V2, rollout="r2"), rolled_back) == Upgrade(package(V2), hot=False)
    never_ran = local(S.FAILED, None, failed_digest=V1, failed_rollout="r1")
    assert next_step(want(V1, rollout="r1"), never_ran) == Idle("blocked")
    assert next_step(want(V1, rollout="r2"), never_ran) == Install(package(V1))


def test_a_crash_loop_stays_failed_until_a_new_rollout() -> None:
    looped = local(S.FAILED, V1, failed_digest=V1, failed_rollout="r1")
    assert next_step(want(V1, rollout="r1"), looped) == Idle("failed")
    assert next_step(want(V1, rollout="r2"), looped) == Start()


def test_an_interactive_hold_wins_over_the_desired_run_state() -> None:
    assert next_step(want(), local(S.PAUSED, held="paused")) == Idle("converged")
    assert next_step(want(), local(S.STOPPED, held="stopped")) == Idle("converged")
    assert next_step(want(), local(S.RUNNING, held="stopped")) == Stop()
