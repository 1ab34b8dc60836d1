"""The decider pattern: pure `decide(command, state) -> events` and `evolve(state, event) -> state`.

Domain modules build a `Decider` from plain functions; nothing here does I/O. Refusals are raised
as `DomainError` (see errors.py) so the runner can turn them into a typed `Refused` outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")
E = TypeVar("E")
S = TypeVar("S")


@dataclass(frozen=True)
class Decider(Generic[C, E, S]):
    """`initial` is the empty state, or a zero-argument factory of it for deciders whose
    `evolve` updates large states in place (each fold then starts from a fresh one)."""

    initial: S | Callable[[], S]
    decide: Callable[[C, S], Sequence[E]]
    evolve: Callable[[S, E], S]

    def empty(self) -> S:
        return self.initial() if callable(self.initial) else self.initial

    def fold(self, events: Iterable[E], state: S | None = None) -> S:
        current = self.empty() if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current

    def run(self, given: Iterable[E], command: C) -> Sequence[E]:
        """given-events / when-command / then-events, for tests and dry runs."""
        return self.decide(command, self.fold(given))
