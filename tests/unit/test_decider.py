"""The decider pattern on a toy "device admission" domain: given events / when command / then events.

The toy is written the way a service's domain module is: types and pure functions, no I/O; the
clock and the operator arrive inside the commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec
import pytest

from sdv_events.decider import Decider
from sdv_events.decider_testing import Refusal, then, then_events
from sdv_events.errors import DomainError

T0 = datetime(2025, 1, 1, tzinfo=UTC)


# --- commands -----------------------------------------------------------------------------------
class Announce(msgspec.Struct, frozen=True):
    serial: str
    at: datetime


class Accept(msgspec.Struct, frozen=True):
    by: str
    at: datetime


class Reject(msgspec.Struct, frozen=True):
    by: str
    reason: str


Command = Announce | Accept | Reject


# --- events -------------------------------------------------------------------------------------
class Announced(msgspec.Struct, frozen=True):
    serial: str
    at: datetime


class Accepted(msgspec.Struct, frozen=True):
    by: str
    at: datetime


class Rejected(msgspec.Struct, frozen=True):
    by: str
    reason: str


Event = Announced | Accepted | Rejected


# --- state --------------------------------------------------------------------------------------
class Admission(msgspec.Struct, frozen=True):
    status: Literal["unknown", "pending", "accepted", "rejected"] = "unknown"
    serial: str | None = None
    announcements: int = 0


def decide(command: Command, state: Admission) -> Sequence[Event]:
    match command:
        case Announce(serial=serial, at=at):
            if state.status == "unknown":
                return [Announced(serial, at)]
            if serial != state.serial:
                raise DomainError(
                    f"device already announced with serial {state.serial}", code="serial_mismatch"
                )
            return []  # a device re-announcing after a reboot is not news
        case Accept(by=by, at=at):
            if state.status == "unknown":
                raise DomainError("device was never announced", code="not_announced")
            if state.status == "rejected":
                raise DomainError("device was rejected; it must not be accepted", code="rejected")
            if state.status == "accepted":
                return []
            return [Accepted(by, at)]
        case Reject(by=by, reason=reason):
            if state.status == "accepted":
                raise DomainError(
                    "an accepted device is decommissioned, not rejected", code="already_accepted"
                )
            if state.status == "rejected":
                return []
            return [Rejected(by, reason)]
    raise TypeError(f"unknown command {command!r}")


def evolve(state: Admission, event: Event) -> Admission:
    match event:
        case Announced(serial=serial):
            return msgspec.structs.replace(
                state, status="pending", serial=serial, announcements=state.announcements + 1
            )
        case Accepted():
            return msgspec.structs.replace(state, status="accepted")
        case Rejected():
            return msgspec.structs.replace(state, status="rejected")
    return state


admission: Decider[Command, Event, Admission] = Decider(initial=Admission(), decide=decide, evolve=evolve)

ANNOUNCED = Announced("SN-1", T0)


# --- given / when / then ------------------------------------------------------------------------


def test_unknown_device_announces() -> None:
    assert admission.run([], Announce("SN-1", T0)) == [Announced("SN-1", T0)]


def test_pending_device_is_accepted() -> None:
    assert admission.run([ANNOUNCED], Accept("alice", T0)) == [Accepted("alice", T0)]


def test_pending_device_is_rejected() -> None:
    assert admission.run([ANNOUNCED], Reject("bob", "unknown vendor")) == [Rejected("bob", "unknown vendor")]


def test_re_announce_with_same_serial_changes_nothing() -> None:
    assert admission.run([ANNOUNCED], Announce("SN-1", T0)) == []


def test_accept_twice_is_idempotent() -> None:
    assert admission.run([ANNOUNCED, Accepted("alice", T0)], Accept("carol", T0)) == []


@pytest.mark.parametrize(
    ("given", "command", "code"),
    [
        ([], Accept("alice", T0), "not_announced"),
        ([ANNOUNCED], Announce("SN-2", T0), "serial_mismatch"),
        ([ANNOUNCED, Rejected("bob", "x")], Accept("alice", T0), "rejected"),
        ([ANNOUNCED, Accepted("alice", T0)], Reject("bob", "late"), "already_accepted"),
    ],
)
def test_refusals_are_domain_errors_with_stable_codes(
    given: list[Event], command: Command, code: str
) -> None:
    with pytest.raises(DomainError) as info:
        admission.run(given, command)
    assert info.value.code == code
    assert info.value.message  # readable by a person
    assert str(info.value) == info.value.message


def test_domain_error_without_code_is_rejected() -> None:
    assert DomainError("no").code == "rejected"


# --- the Decider helpers themselves --------------------------------------------------------------


def test_fold_applies_events_in_order() -> None:
    state = admission.fold([ANNOUNCED, Accepted("alice", T0)])
    assert state == Admission(status="accepted", serial="SN-1", announcements=1)
    # Order matters: the same events reversed end in another state.
    assert admission.fold([Accepted("alice", T0), ANNOUNCED]).status == "pending"


def test_fold_of_nothing_is_the_initial_state() -> None:
    assert admission.fold([]) is admission.initial


def test_fold_continues_from_a_given_state() -> None:
    """Loading from a snapshot: fold(rest, state=fold(head)) == fold(head + rest)."""
    head = [ANNOUNCED]
    rest = [Rejected("bob", "x")]
    assert admission.fold(rest, state=admission.fold(head)) == admission.fold(head + rest)


def test_fold_accepts_a_one_shot_iterator() -> None:
    assert admission.fold(iter([ANNOUNCED])).status == "pending"


def test_decide_is_pure() -> None:
    given = [ANNOUNCED]
    first = admission.run(given, Accept("alice", T0))
    second = admission.run(given, Accept("alice", T0))
    assert first == second
    assert given == [ANNOUNCED]
    assert admission.initial == Admission()


def test_events_decided_then_folded_reach_the_state_a_user_expects() -> None:
    history: list[Event] = []
    for command in (Announce("SN-9", T0), Announce("SN-9", T0), Accept("alice", T0), Accept("alice", T0)):
        history.extend(admission.run(history, command))
    assert history == [Announced("SN-9", T0), Accepted("alice", T0)]
    assert admission.fold(history) == Admission(status="accepted", serial="SN-9", announcements=1)


# --- the testing helpers (sdv_events.decider_testing) --------------------------------------------


def test_then_gives_the_events_or_the_typed_refusal() -> None:
    assert then(admission, given=[ANNOUNCED], when=Accept("alice", T0)) == [Accepted("alice", T0)]
    assert then(admission, given=[], when=Accept("alice", T0)) \
        == Refusal("not_announced", "device was never announced")


def test_then_events_fails_the_test_with_the_refusal_when_a_step_is_refused() -> None:
    assert then_events(admission, given=[ANNOUNCED], when=Accept("alice", T0)) == [Accepted("alice", T0)]
    with pytest.raises(AssertionError, match="Accept refused: not_announced: device was never announced"):
        then_events(admission, given=[], when=Accept("alice", T0))
