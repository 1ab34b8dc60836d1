"""How a consumer orders and dedupes the events of a category.

Services' categories (`rollout`, `device`, `package`, `policy`, …) come from an event store:
each stream's versions are 1, 2, 3, … without holes, so the runner tracks the last version it
handled per stream — a duplicate is any version at or below it, whatever its JetStream sequence
or message id — and a hole is a gap to heal from the owning store. It consumes such a category
whole (`sdv.evt.<category>.>`) even when the processor handles a few types only, or it could
not tell a gap from a type it does not care about. Services' categories are trusted: an event
there that this build cannot read is a rolling-deploy problem (a newer writer), so the consumer
stops at it rather than skipping it.

Devices' facts (`agent`) come from agents, straight to JetStream: versions count the agent's
own facts (a reinstalled agent starts again at 1) and the owning "store" is a vehicle, so they
are deduped by event id (stable per fact, see the edge agent's domain/facts.py) and never
healed. They are untrusted: a fact this build cannot read is dead-lettered, not waited for —
a device must not be able to stop the orchestrator by publishing `AppHealthy.v99`.
"""

from __future__ import annotations

from collections.abc import Iterable

from sdv_events.processing.processor import category_of_subject

DEVICE_CATEGORIES = frozenset({"agent"})


def is_versioned(category: str) -> bool:
    return category not in DEVICE_CATEGORIES


def consumer_subjects(filter_subjects: Iterable[str]) -> list[str]:
    """The JetStream filter for a processor's subjects: whole categories for services' events,
    the subjects as given for devices' facts (and for anything that names no category)."""
    subjects: list[str] = []
    for subject in filter_subjects:
        category = category_of_subject(subject)
        wanted = f"sdv.evt.{category}.>" if category and is_versioned(category) else subject
        if wanted not in subjects:
            subjects.append(wanted)
    return subjects
