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

A consumer of several subjects asks JetStream for one subject covering them all
(`covering_subject`) and skips the others itself, by subject, before decoding anything
(`SubjectSet.reads`): on nats-server 2.15 a consumer with several `filter_subjects` on a file
stream holding many subjects delivers about 20 times slower than one with a single wildcard
filter (bench/monitor.py measures both: 2,300 against 11,000-23,000 messages/s), far more than
the cost of skipping what the wildcard brings in besides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sdv_events.processing.processor import category_of_subject, subject_matches

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


def covering_subject(subjects: Sequence[str]) -> str:
    """The narrowest single filter matching every subject `subjects` match:
    `sdv.evt.device.>` and `sdv.evt.rollout.>` → `sdv.evt.*.>`; `sdv.evt.agent.*.AppHealthy`
    and `sdv.evt.agent.*.AppFailed` → `sdv.evt.agent.*.*`."""
    if not subjects:
        raise ValueError("no subject to cover")
    tokens = [s.split(".") for s in subjects]
    shortest = min(len(t) for t in tokens)
    covering: list[str] = []
    for i in range(shortest):
        column = {t[i] for t in tokens}
        if ">" in column or (i == shortest - 1 and any(len(t) > shortest for t in tokens)):
            return ".".join([*covering, ">"])
        covering.append(column.pop() if len(column) == 1 else "*")
    return ".".join(covering)


class SubjectSet:
    """What a consumer reads of what its JetStream filter delivers: a message on a subject none
    of `subjects` matches is acked and skipped without being decoded."""

    def __init__(self, subjects: Sequence[str]) -> None:
        self.subjects = tuple(subjects)
        # `sdv.evt.<category>.>` is a set lookup; anything else a wildcard match.
        whole = {s: c for s in subjects if (c := category_of_subject(s)) and s == f"sdv.evt.{c}.>"}
        self._whole = frozenset(whole.values())
        self._others = tuple(s for s in subjects if s not in whole)

    @property
    def jetstream_filter(self) -> str:
        return covering_subject(self.subjects)

    def reads(self, subject: str) -> bool:
        parts = subject.split(".", 3)
        if len(parts) == 4 and parts[2] in self._whole and parts[0] == "sdv" and parts[1] == "evt":
            return True
        return any(subject_matches(subject, p) for p in self._others)
