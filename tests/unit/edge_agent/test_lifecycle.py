"""The app lifecycle state machine, checked over every (from, to) pair."""

from __future__ import annotations

import itertools

import pytest

from sdv_edge_agent.domain.lifecycle import (
    AppState,
    IllegalTransition,
    allowed,
    can_be_removed,
    transition,
)
from sdv_events.errors import DomainError
from sdv_events.schemas.deployment import LifecycleState

S = AppState
# Written out independently of the implementation's table: the legal moves and nothing else.
LEGAL = {
    (None, S.INSTALLING),
    (S.INSTALLING, S.INSTALLED), (S.INSTALLING, S.FAILED),
    (S.INSTALLED, S.STARTING), (S.INSTALLED, S.INSTALLING), (S.INSTALLED, S.UNINSTALLING),
    (S.STARTING, S.RUNNING), (S.STARTING, S.STOPPED), (S.STARTING, S.FAILED),
    (S.RUNNING, S.PAUSED), (S.RUNNING, S.STOPPED), (S.RUNNING, S.STARTING), (S.RUNNING, S.FAILED),
    (S.PAUSED, S.RUNNING), (S.PAUSED, S.STOPPED), (S.PAUSED, S.STARTING), (S.PAUSED, S.FAILED),
    (S.STOPPED, S.STARTING), (S.STOPPED, S.INSTALLING), (S.STOPPED, S.UNINSTALLING),
    (S.FAILED, S.STARTING), (S.FAILED, S.INSTALLING), (S.FAILED, S.STOPPED), (S.FAILED, S.UNINSTALLING),
}
ALL_PAIRS = list(itertools.product([None, *AppState], AppState))


def test_states_match_the_shared_contract() -> None:
    assert {s.value for s in AppState} == set(LifecycleState.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS)
def test_every_pair_is_legal_exactly_when_listed(current: AppState | None, target: AppState) -> None:
    if (current, target) in LEGAL:
        assert allowed(current, target)
        assert transition("app", current, target) is target
    else:
        assert not allowed(current, target)
        with pytest.raises(IllegalTransition) as info:
            transition("app", current, target)
        assert info.value.current is current
        assert info.value.target is target


def test_the_happy_path_of_the_design_is_legal() -> None:
    state: AppState | None = None
    for target in [S.INSTALLING, S.INSTALLED, S.STARTING, S.RUNNING, S.PAUSED, S.RUNNING, S.STOPPED,
                   S.UNINSTALLING]:
        state = transition("speed-monitor", state, target)
    assert can_be_removed(state)


def test_the_refusal_names_the_app_the_move_and_what_is_allowed() -> None:
    with pytest.raises(IllegalTransition) as info:
        transition("speed-monitor", S.STOPPED, S.PAUSED)
    err = info.value
    assert isinstance(err, DomainError)
    assert err.code == "illegal_transition"
    assert err.message == (
        "speed-monitor: cannot go from STOPPED to PAUSED; allowed: INSTALLING, STARTING, UNINSTALLING"
    )


def test_refusal_before_install_and_during_removal_read_well() -> None:
    with pytest.raises(IllegalTransition, match="cannot go from not installed to RUNNING; allowed: INSTALLING"):
        transition("a", None, S.RUNNING)
    with pytest.raises(IllegalTransition, match=r"allowed: nothing \(the app is being removed\)"):
        transition("a", S.UNINSTALLING, S.STARTING)


@pytest.mark.parametrize("state", [None, *AppState])
def test_only_uninstalling_ends_in_removal(state: AppState | None) -> None:
    assert can_be_removed(state) is (state is S.UNINSTALLING)


def test_every_state_but_uninstalling_has_a_way_out() -> None:
    for state in AppState:
        outs = [t for t in AppState if allowed(state, t)]
        assert bool(outs) is (state is not S.UNINSTALLING), state
