"""The operator aggregate (stream `operator-<name>`): a person's identity on the bus and its role.

    (unknown) ──add──▶ active ──revoke──▶ revoked ──add (a new key)──▶ active

The name is the identity events record (`operator:<name>`); the key is whatever key pair holds
it now. Revoking refuses that key for good (the server refuses its JWTs); adding the name again
— the same person with new credentials, or another role — takes a new key. An active operator
keeps its key and role: to change either, revoke and add again, so the record shows both.
The bootstrap admin's name (`sdv up`'s own credentials) is not the registry's to give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from sdv_events.decider import Decider
from sdv_events.errors import DomainError
from sdv_events.schemas.operators import OperatorAdded, OperatorRevoked, OperatorRole, OperatorStatus

OperatorEvent = OperatorAdded | OperatorRevoked


class AddOperator(msgspec.Struct, frozen=True):
    name: str
    role: OperatorRole
    public_key: str
    reserved_names: frozenset[str] = frozenset()


class RevokeOperator(msgspec.Struct, frozen=True):
    name: str
    reason: str = ""


OperatorCommand = AddOperator | RevokeOperator


@dataclass(frozen=True)
class OperatorState:
    status: OperatorStatus | None = None  # None: never added
    role: OperatorRole | None = None
    public_key: str | None = None
    refused_keys: frozenset[str] = frozenset()


def decide(command: OperatorCommand, state: OperatorState) -> Sequence[OperatorEvent]:
    match command:
        case AddOperator(name=name, role=role, public_key=key, reserved_names=reserved):
            if name in reserved:
                raise DomainError(f"the name {name!r} is reserved for the suite's own admin "
                                  "(operator.creds of `sdv up` / `sdv deploy init`)", code="conflict")
            if key in state.refused_keys:
                raise DomainError(f"this key was revoked for {name!r}: make a new key pair",
                                  code="conflict")
            if state.status == "active":
                if (state.role, state.public_key) == (role, key):
                    return []
                raise DomainError(f"operator {name!r} exists ({state.role}); revoke it before "
                                  "adding it with another key or role", code="conflict")
            return [OperatorAdded(name, role, key)]
        case RevokeOperator(name=name, reason=reason):
            if state.status is None or state.public_key is None:
                raise DomainError(f"no operator {name!r}", code="not_found")
            if state.status == "revoked":
                return []  # again: nothing to record (the revocation is pushed again)
            return [OperatorRevoked(name, state.public_key, reason)]
    raise DomainError(f"unknown command {type(command).__name__}", code="invalid_request")


def evolve(state: OperatorState, event: OperatorEvent) -> OperatorState:
    match event:
        case OperatorAdded(role=role, public_key=key):
            return OperatorState("active", role, key, state.refused_keys)
        case OperatorRevoked(public_key=key):
            return OperatorState("revoked", state.role, key, state.refused_keys | {key})
    return state


operator_decider: Decider[OperatorCommand, OperatorEvent, OperatorState] = Decider(
    OperatorState(), decide, evolve)
