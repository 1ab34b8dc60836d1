"""Decider tests read given events → when a command → then events (after Chassaing's
`givenWhen` in `run.fsx`): history in, decisions out, never the decider's state.

    assert then(device_decider, given=[announced], when=Accept(d)) == [DeviceAccepted(...)]
    assert then(package_decider, given=[], when=Yank(...)) == Refusal("not_found", "...")
    history += then_events(rollout_decider, given=history, when=Tick(now))  # must be decided

Pure: no I/O, nothing but the decider's own functions; usable for dry runs too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sdv_events.decider import Decider
from sdv_events.errors import DomainError

C = TypeVar("C")
E = TypeVar("E")


@dataclass(frozen=True)
class Refusal:
    """The decider refused the command: its stable `code` and its `message` for people."""

    code: str
    message: str


def then(decider: Decider[C, E, Any], *, given: Iterable[E], when: C) -> list[E] | Refusal:
    """The events `decider` decides for `when` after the history `given`, or its refusal."""
    try:
        return list(decider.run(given, when))
    except DomainError as err:
        return Refusal(err.code, err.message)


def then_events(decider: Decider[C, E, Any], *, given: Iterable[E], when: C) -> list[E]:
    """The events `decider` decides for `when` after `given`, for building a history step by
    step: a refusal fails the test there, with its code and message."""
    decided = then(decider, given=given, when=when)
    if isinstance(decided, Refusal):
        raise AssertionError(f"{type(when).__name__} refused: {decided.code}: {decided.message}")
    return decided
