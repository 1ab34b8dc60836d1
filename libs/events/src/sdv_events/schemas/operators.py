"""Operator events (stream `operator-<name>`, written by the registry) and the registry's
operator commands (`sdv.cmd.registry.add_operator|list_operators|revoke_operator`).

An operator is a person's NATS identity: a user of the operators account whose JWT names them
and carries their role's permissions (`sdv_events.auth.roles`). The key pair is made where the
credentials are used (`sdv operators add`); the registry sees and records only the public key,
and signs the JWT. The name is what every event an operator causes records as its actor
(`operator:<name>`, `sdv_events.bus.actor`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from sdv_events.registry import event
from sdv_events.schemas.devices import Text, UserPublicKey

# One subject token and a stream id part, readable in an audit trail: `alice`, `ci-bot`.
OPERATOR_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
OperatorName = Annotated[str, msgspec.Meta(pattern=OPERATOR_NAME_PATTERN)]
OperatorRole = Literal["viewer", "operator", "admin"]  # least to most: sdv_events.auth.roles
OperatorStatus = Literal["active", "revoked"]


# --- events -------------------------------------------------------------------------------


@event("registry.OperatorAdded")
class OperatorAdded(msgspec.Struct, frozen=True):
    name: str
    role: OperatorRole
    public_key: str


@event("registry.OperatorRevoked")
class OperatorRevoked(msgspec.Struct, frozen=True):
    name: str
    public_key: str  # the key whose JWTs the server refuses from now on
    reason: str = ""


# --- commands and queries (sdv.cmd.registry.*) ------------------------------------------------


class AddOperator(msgspec.Struct, frozen=True):
    name: OperatorName
    role: OperatorRole
    public_key: UserPublicKey  # made by whoever will hold the seed; it never reaches the registry


class RevokeOperator(msgspec.Struct, frozen=True):
    name: OperatorName
    reason: Text = ""


class ListOperators(msgspec.Struct, frozen=True):
    include_revoked: bool = False


class OperatorView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role: OperatorRole
    status: OperatorStatus
    public_key: str
    added_at: datetime
    added_by: str | None = None  # the actor of OperatorAdded
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    reason: str = ""


class OperatorList(msgspec.Struct, frozen=True):
    operators: list[OperatorView]


class OperatorCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """The signed user JWT for the key in the request (no secret: the seed stays with the
    caller, who writes `jwt` + seed as a `.creds` file)."""

    operator: OperatorView
    jwt: str
    account: str  # the operators account's public key
