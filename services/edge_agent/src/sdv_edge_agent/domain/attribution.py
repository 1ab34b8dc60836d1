"""Which desired document a device fact answers: the rollout and desired revision it carries.

A rollout counts a device by the facts that name it, so every fact about an app names the rollout
of the desired entry that caused it, from the first fact of an install to the last — the old
version's stop during an upgrade included — and facts after a rollback name the rollout that rolled
back (an entry a rollback restores carries no rollout of its own).

An entry's cause is fixed when a document changes that entry: a document that changes only other
apps (a new revision for the device) leaves the cause, and so the facts' identities, as they were.
The app's supervisor adopts the cause when it acts on the entry, before its first fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.reconcile import LocalApp, run_state
from sdv_events.schemas.deployment import DesiredApp, DesiredState


@dataclass(frozen=True)
class Cause:
    rollout_id: str | None
    revision: int  # the desired revision that set the entry


def entry_causes(old: DesiredState | None, new: DesiredState,
                 causes: Mapping[str, Cause]) -> dict[str, Cause]:
    """The cause of each entry of a newly accepted document, given the previous document and
    the causes of its entries."""
    result: dict[str, Cause] = {}
    for name, entry in new.apps.items():
        before = old.apps.get(name) if old is not None else None
        kept = causes.get(name)
        if kept is not None and entry == before:
            result[name] = kept
            continue
        rollout = entry.rollout_id
        if rollout is None and entry.rollback:
            # The assignment this rollback replaces names the rollout that is rolling back.
            rollout = before.rollout_id if before is not None else None
            rollout = rollout or (kept.rollout_id if kept is not None else None)
        result[name] = Cause(rollout, new.revision)
    return result


SETTLED = {"running": AppState.RUNNING, "paused": AppState.PAUSED}


def already_current(desired: DesiredApp, local: LocalApp, healthy: bool) -> bool:
    """The device runs the version the entry asks for, healthy and as asked (running or
    paused): nothing to change, the entry's rollout can count it at once."""
    wanted = SETTLED.get(run_state(desired, local))
    return desired.package.digest == local.digest and healthy and local.alive and local.state is wanted
