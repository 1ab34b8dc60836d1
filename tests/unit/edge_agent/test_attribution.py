"""Which desired document a fact answers (rollout, revision), and when a device is already current."""

from __future__ import annotations

import pytest

from sdv_edge_agent.domain.attribution import Cause, already_current, entry_causes
from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.reconcile import LocalApp
from sdv_events.schemas.deployment import DesiredApp, DesiredState, RunState
from sdv_events.schemas.packages import PackageInfo

S = AppState
V1, V2 = "1" * 64, "2" * 64


def package(digest: str) -> PackageInfo:
    return PackageInfo(name="app", version="1.0.0" if digest == V1 else "2.0.0", digest=digest, size=1,
                       object_name=digest, manifest_digest="m", signature="s", key_id="k", channel="dev",
                       runtime="native", entry_point="main.py", python_version="3.11")


def entry(digest: str, rollout: str | None, *, rollback: bool = False, state: RunState = "running") -> DesiredApp:
    return DesiredApp(package=package(digest), rollout_id=rollout, rollback=rollback, state=state)


def doc(revision: int, **apps: DesiredApp) -> DesiredState:
    return DesiredState(device_id="car", revision=revision, apps=apps)


def test_a_changed_entry_is_caused_by_the_document_that_changed_it() -> None:
    first = entry_causes(None, doc(1, app=entry(V1, "r1")), {})
    assert first == {"app": Cause("r1", 1)}
    upgraded = entry_causes(doc(1, app=entry(V1, "r1")), doc(2, app=entry(V2, "r2")), first)
    assert upgraded == {"app": Cause("r2", 2)}


def test_a_document_that_changes_other_apps_leaves_the_cause_as_it_was() -> None:
    causes = {"app": Cause("r1", 1)}
    later = entry_causes(doc(1, app=entry(V1, "r1")), doc(5, app=entry(V1, "r1"), other=entry(V2, "r9")), causes)
    assert later == {"app": Cause("r1", 1), "other": Cause("r9", 5)}


def test_the_same_rollout_asking_again_at_a_new_revision_is_a_new_cause() -> None:
    causes = {"app": Cause("r1", 1)}
    paused = entry_causes(doc(1, app=entry(V1, "r1")), doc(2, app=entry(V1, "r1", state="paused")), causes)
    assert paused == {"app": Cause("r1", 2)}


def test_a_rollback_entry_without_a_rollout_names_the_rollout_it_rolls_back() -> None:
    causes = {"app": Cause("r2", 2)}
    back = entry_causes(doc(2, app=entry(V2, "r2")), doc(3, app=entry(V1, None, rollback=True)), causes)
    assert back == {"app": Cause("r2", 3)}
    # The same restored entry again (another app changed): nothing moves.
    again = entry_causes(doc(3, app=entry(V1, None, rollback=True)),
                         doc(4, app=entry(V1, None, rollback=True), other=entry(V2, "r7")), back)
    assert again["app"] == Cause("r2", 3)
    # An agent that kept no entry (first document after its store was lost) falls back to its causes.
    assert entry_causes(None, doc(6, app=entry(V1, None, rollback=True)), {"app": Cause("r5", 4)}) == {
        "app": Cause("r5", 6)}
    # A rollback entry that names its rollout is taken at its word; a plain entry without one has none.
    assert entry_causes(None, doc(7, app=entry(V1, "r8", rollback=True)), {})["app"] == Cause("r8", 7)
    assert entry_causes(doc(2, app=entry(V2, "r2")), doc(8, app=entry(V1, None)), causes)["app"] == Cause(None, 8)


def test_removed_entries_have_no_cause() -> None:
    assert entry_causes(doc(1, app=entry(V1, "r1")), doc(2), {"app": Cause("r1", 1)}) == {}


def app(state: AppState | None, digest: str | None = V1, *, alive: bool = True, held: RunState | None = None) -> LocalApp:
    return LocalApp("app", state, digest, alive, held=held)


@pytest.mark.parametrize(("wanted", "here", "healthy", "current"), [
    (entry(V1, "r2"), app(S.RUNNING), True, True),
    (entry(V1, "r2", state="paused"), app(S.PAUSED), True, True),
    (entry(V1, "r2"), app(S.RUNNING), False, False),  # on trial or being checked: its health answers
    (entry(V1, "r2"), app(S.RUNNING, alive=False), True, False),  # gone: it is started, then reported
    (entry(V1, "r2"), app(S.STOPPED, alive=False), True, False),
    (entry(V1, "r2"), app(S.FAILED, alive=False), True, False),
    (entry(V1, "r2"), app(S.PAUSED), True, False),  # to be resumed first
    (entry(V1, "r2"), app(S.PAUSED, held="paused"), True, True),  # an operator's hold stands
    (entry(V2, "r2"), app(S.RUNNING), True, False),  # another version: an upgrade
    (entry(V1, "r2", state="stopped"), app(S.RUNNING), True, False),
])
def test_already_current_means_the_asked_version_runs_healthy_as_asked(
    wanted: DesiredApp, here: LocalApp, healthy: bool, current: bool
) -> None:
    assert already_current(wanted, here, healthy) is current
