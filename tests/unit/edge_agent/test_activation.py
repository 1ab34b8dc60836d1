"""Download now, activate later, as the pure reconcile decides it: a gated or held version is staged
beside the active one, waits, and is switched to only once its activation is released."""

from __future__ import annotations

import pytest

from sdv_edge_agent.domain.activation import (
    HELD,
    ActivationKey,
    AwaitActivation,
    Deferral,
    Stage,
    Unstage,
    activation_key,
    deferral,
    deferral_mark,
)
from sdv_edge_agent.domain.admission import admission_problem
from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.reconcile import Idle, Install, LocalApp, Start, Stop, Upgrade, next_step
from sdv_events.gates import Verdict, parse_gates
from sdv_events.schemas.deployment import Activation, DesiredApp
from sdv_events.schemas.packages import PackageInfo

S = AppState
V1, V2, V3 = "1" * 64, "2" * 64, "3" * 64
STOPPED_CAR = ["Vehicle.Speed == 0"]


def package(digest: str, *, hot_swap: bool = False) -> PackageInfo:
    version = {V1: "1.0.0", V2: "2.0.0", V3: "3.0.0"}[digest]
    return PackageInfo(
        name="app", version=version, digest=digest, size=1, object_name=digest, manifest_digest="m",
        signature="s", key_id="k", channel="dev", runtime="native", entry_point="main.py",
        python_version="3.11", hot_swap=hot_swap,
    )


def want(digest: str = V2, gates: list[str] | None = None, *, hold: bool = False, hot_swap: bool = False,
         rollout: str = "r2") -> DesiredApp:
    activation = Activation(gates=gates or [], hold=hold) if gates is not None or hold else None
    return DesiredApp(package=package(digest, hot_swap=hot_swap), rollout_id=rollout,
                      activation=activation)


def running(digest: str | None = V1, *, staged: str | None = None, released: ActivationKey | None = None,
            state: AppState | None = S.RUNNING, alive: bool = True, **kw: object) -> LocalApp:
    return LocalApp("app", state, digest, alive, staged=staged, released=released, **kw)  # type: ignore[arg-type]


def key(digest: str = V2, gates: list[str] | None = None, hold: bool = False) -> ActivationKey:
    return ActivationKey(digest, tuple(STOPPED_CAR if gates is None else gates), hold)


def test_a_gated_version_is_staged_first_and_the_running_one_is_left_alone() -> None:
    assert next_step(want(gates=STOPPED_CAR), running()) == Stage(package(V2))


def test_a_staged_version_waits_for_its_gates_instead_of_switching() -> None:
    step = next_step(want(gates=STOPPED_CAR), running(staged=V2))
    assert step == AwaitActivation(package(V2), key(), tuple(parse_gates(STOPPED_CAR)))
    assert not step.held


def test_released_gates_switch_by_the_ordinary_upgrade_cold_or_hot() -> None:
    assert next_step(want(gates=STOPPED_CAR), running(staged=V2, released=key())) == Upgrade(package(V2), hot=False)
    hot = want(gates=STOPPED_CAR, hot_swap=True)
    assert next_step(hot, running(staged=V2, released=key())) == Upgrade(package(V2, hot_swap=True), hot=True)


def test_with_nothing_installed_the_install_is_staged_and_released_into_an_install() -> None:
    assert next_step(want(gates=STOPPED_CAR), running(None, state=None, alive=False)) == Stage(package(V2))
    staged = running(None, state=S.INSTALLING, alive=False, staged=V2)
    assert isinstance(next_step(want(gates=STOPPED_CAR), staged), AwaitActivation)
    released = running(None, state=S.INSTALLING, alive=False, staged=V2, released=key())
    assert next_step(want(gates=STOPPED_CAR), released) == Install(package(V2))


def test_a_release_counts_only_for_the_gates_it_was_judged_on() -> None:
    """Other gates in a newer document wait again, on the staged files (no second Stage)."""
    other = ["Vehicle.Powertrain.TractionBattery.StateOfCharge.Current >= 30"]
    step = next_step(want(gates=other), running(staged=V2, released=key()))
    assert isinstance(step, AwaitActivation)
    assert step.key == key(gates=other)


def test_a_hold_waits_for_a_newer_document_and_its_release_switches_at_once() -> None:
    held = next_step(want(hold=True), running())
    assert held == Stage(package(V2))
    step = next_step(want(hold=True), running(staged=V2))
    assert isinstance(step, AwaitActivation)
    assert step.held
    assert step.gates == ()
    # The orchestrator clears the hold with a new revision: the staged version switches now.
    assert next_step(want(), running(staged=V2)) == Upgrade(package(V2), hot=False)
    assert next_step(want(gates=[], hold=False), running(staged=V2)) == Upgrade(package(V2), hot=False)


def test_a_hold_with_gates_is_held_first() -> None:
    step = next_step(want(gates=STOPPED_CAR, hold=True), running(staged=V2))
    assert isinstance(step, AwaitActivation)
    assert step.held


def test_an_activation_without_gates_or_hold_switches_at_once() -> None:
    assert activation_key(want(gates=[])) is None
    assert next_step(want(gates=[]), running()) == Upgrade(package(V2), hot=False)


@pytest.mark.parametrize(("desired", "then"), [
    (want(V3, STOPPED_CAR, rollout="r3"), Unstage()),  # another version: unstage, then stage that one
    (want(V1), Unstage()),  # back to the running version
    (None, Stop()),  # no entry: stop, then uninstall (which removes every version)
])
def test_a_newer_document_supersedes_the_staged_version(desired: DesiredApp | None, then: object) -> None:
    assert next_step(desired, running(staged=V2)) == then
    if isinstance(then, Unstage):
        assert next_step(desired, running()) in (Stage(package(V3)), Idle("converged"))


def test_the_running_version_is_started_again_if_it_vanished_while_no_agent_ran() -> None:
    gone = running(staged=V2, alive=False)
    assert next_step(want(gates=STOPPED_CAR), gone) == Start()
    assert next_step(want(gates=STOPPED_CAR), running(alive=False)) == Start()  # before staging, too


def test_a_crash_looped_running_version_stays_failed_while_the_new_one_waits() -> None:
    failed = running(staged=V2, state=S.FAILED, alive=False, failed_digest=V1, failed_rollout="r1")
    assert isinstance(next_step(want(gates=STOPPED_CAR), failed), AwaitActivation)


def test_a_version_refused_here_for_this_rollout_is_not_staged_again() -> None:
    refused = running(failed_digest=V2, failed_rollout="r2")
    assert next_step(want(gates=STOPPED_CAR), refused) == Idle("converged")
    assert next_step(want(gates=STOPPED_CAR, rollout="r9"), refused) == Stage(package(V2))  # a new rollout retries


def test_a_deferral_says_which_gate_which_signal_and_the_value_seen() -> None:
    step = AwaitActivation(package(V2), key(), tuple(parse_gates(STOPPED_CAR)))
    verdict = Verdict(holds=False, gate="Vehicle.Speed == 0", signal="Vehicle.Speed", value=50.0,
                      reason="waiting for Vehicle.Speed == 0: Vehicle.Speed is 50")
    assert deferral(step, verdict) == Deferral(verdict.reason, gate="Vehicle.Speed == 0",
                                               signal="Vehicle.Speed", value=50.0)
    held = AwaitActivation(package(V2), key(gates=[], hold=True), ())
    assert deferral(held) == Deferral(HELD, held=True)


def test_a_deferral_is_told_again_only_for_a_new_reason_or_a_new_entry() -> None:
    told = deferral_mark("r2", 7, "waiting for Vehicle.Speed == 0: Vehicle.Speed is 50")
    assert deferral_mark("r2", 7, "waiting for Vehicle.Speed == 0: Vehicle.Speed is 50") == told
    assert deferral_mark("r2", 7, "waiting for Vehicle.Speed == 0: Vehicle.Speed is 20") != told
    assert deferral_mark("r2", 8, "waiting for Vehicle.Speed == 0: Vehicle.Speed is 50") != told
    assert deferral_mark("r3", 7, "waiting for Vehicle.Speed == 0: Vehicle.Speed is 50") != told


def test_a_gate_the_agent_cannot_judge_refuses_the_entry_at_admission() -> None:
    assert admission_problem("app", want(gates=STOPPED_CAR)) is None
    problem = admission_problem("app", want(gates=["Speed is zero"]))
    assert problem is not None
    assert "Speed is zero" in problem
