"""What a consumer of the bus is: a processor names its subjects and handles events.

Two kinds, one runner (`runner.ConsumerRunner`) for both:
- a `Projection` (a read model) applies one event inside the runner's PostgreSQL transaction,
  which also records the stream versions and the checkpoint — rows and position commit together,
  and it does no network I/O there (side effects go to `after_commit`);
- a `Processor` (a policy, a fact handler) acts outside any transaction — commands, requests —
  and must be idempotent: after a crash between its action and the runner's bookkeeping the
  same event is handed to it again.
Fetching, decoding, dead letters, dedupe, gap healing, retries, parking, acks, checkpoints and
health are the runner's, so every consumer of the suite follows the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, Self, runtime_checkable

import asyncpg

from sdv_events.envelope import Envelope

# Where a new consumer starts: every event on the bus, or only those published from now on.
Start = Literal["all", "new"]


@runtime_checkable
class Processor(Protocol):
    """Acts on events outside a transaction; must tolerate seeing an event again."""

    # Read-only members: a class attribute (a tuple) or a property satisfies them.
    @property
    def name(self) -> str: ...

    @property
    def filter_subjects(self) -> Sequence[str]: ...

    async def handle(self, events: Sequence[Envelope]) -> None:
        """Handle events in order (one or a batch); raising fails them all (the runner then
        retries them one by one, and parks the one that keeps failing)."""
        ...


@runtime_checkable
class Projection(Protocol):
    """A read model: `apply` runs inside the runner's transaction, with the bookkeeping."""

    @property
    def name(self) -> str: ...

    @property
    def filter_subjects(self) -> Sequence[str]: ...

    @property
    def tables(self) -> Sequence[str]:
        """The tables the projection owns (unqualified): built in a shadow schema on rebuild
        and swapped in at the end."""
        ...

    def at(self, schema: str) -> Self:
        """The same projection writing its tables in another schema (the rebuild's shadow)."""
        ...

    async def create(self, conn: asyncpg.Connection) -> None:
        """Create the projection's tables in its schema (idempotent)."""
        ...

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None: ...


@runtime_checkable
class AppliesBatches(Protocol):
    """A projection that writes a batch of events set-wise (several rows per statement) rather
    than one `apply` each. The runner hands it the events of a fetched batch, in order, inside
    its transaction; it must leave the tables as applying them one by one would. When it
    raises, the runner undoes the batch and applies the events one by one (`apply`, each under
    a savepoint) to find the one that fails."""

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None: ...


@runtime_checkable
class WithSideEffects(Protocol):
    """A projection whose effects leave PostgreSQL (the desired-state KV): recorded as rows in
    `apply`, performed by `after_commit` once they are committed (and at every start, so a crash
    between the commit and the effect loses nothing)."""

    async def after_commit(self) -> None: ...

    async def after_swap(self, conn: asyncpg.Connection) -> None:
        """In the rebuild's swap transaction: mark what must be checked against the outside
        world, so that `after_rebuild` re-sends only what differs."""
        ...

    async def after_rebuild(self) -> None: ...


@runtime_checkable
class SeedsShadow(Protocol):
    """A projection that carries rows over into its rebuild (counters that must keep growing)."""

    async def seed(self, conn: asyncpg.Connection, live_schema: str) -> None: ...


def start_of(consumer: Processor | Projection) -> Start:
    start = getattr(consumer, "start", "all")
    return "new" if start == "new" else "all"


def subject_matches(subject: str, pattern: str) -> bool:
    """NATS wildcard match: `*` one token, `>` one or more trailing tokens."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for i, want in enumerate(wanted):
        if want == ">":
            return len(tokens) > i
        if i >= len(tokens) or (want != "*" and want != tokens[i]):
            return False
    return len(tokens) == len(wanted)


def category_of_subject(subject: str) -> str | None:
    """`sdv.evt.rollout.42.WaveStarted` (or a filter `sdv.evt.rollout.>`) → `rollout`."""
    parts = subject.split(".")
    if len(parts) >= 3 and parts[0] == "sdv" and parts[1] == "evt" and parts[2] not in ("*", ">"):
        return parts[2]
    return None
