"""Who asked: the actor a command handler records in the events a request causes.

Operators are users of the account `OPERATORS`, which reaches commands and ops only through
service imports with `share` on (`sdv_events.auth.accounts`). nats-server stamps every request
that crosses such an import with a `Nats-Request-Info` header of its own — the requester's
account, the public key it proved it holds, and the user JWT it authenticated with — and
replaces a header of that name the client set (tried on nats-server 2.15.1: a forged header
arrives as the server's, tests/integration/test_operator_roles.py). So the actor of an
operator's request is the name in *that* JWT, `operator:<name>`, whatever the client says.

Without an operator's JWT in that header, the request was sent inside the receiver's own
account (a service calling another: it names itself, `service:<name>`), or crossed an import
without `share` (a device's announce, whose handler names the device itself): the actor is what
the `Sdv-Actor` header claims (inside the app account only services and set-up tools hold
credentials). A claim to be an operator is never taken as one: it is recorded as
`unverified:operator:<name>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from sdv_events.auth.jwt import InvalidJwt, decode_jwt
from sdv_events.auth.roles import OperatorRole, role_of_claims

REQUEST_INFO_HEADER = "Nats-Request-Info"  # nats-server's ClientInfoHdr
ACTOR_HEADER = "Sdv-Actor"
OPERATOR_PREFIX = "operator:"
UNVERIFIED_PREFIX = "unverified:"


@dataclass(frozen=True)
class VerifiedOperator:
    name: str
    role: OperatorRole
    public_key: str

    @property
    def actor(self) -> str:
        return f"{OPERATOR_PREFIX}{self.name}"


def verified_operator(headers: Mapping[str, str]) -> VerifiedOperator | None:
    """The operator the server vouches sent this request, or None (not an operator's request,
    or a header that does not hold together: a JWT of another key than the one authenticated)."""
    raw = headers.get(REQUEST_INFO_HEADER)
    if not raw:
        return None
    try:
        info = json.loads(raw)
        # The server checked the JWT's signature chain when the user connected, and the user
        # proved it holds the key the JWT names (`user`); both came in the server's header.
        claims = decode_jwt(info["jwt"], verify=False)
        name, key = claims["name"], claims["sub"]
    except (ValueError, KeyError, TypeError, InvalidJwt):
        return None
    role = role_of_claims(claims)
    if role is None or not isinstance(name, str) or not name or key != info.get("user"):
        return None
    return VerifiedOperator(name, role, key)


def actor_of(headers: Mapping[str, str]) -> str:
    """`operator:<name>` from the server's header; else the sender's own claim, else `anonymous`."""
    operator = verified_operator(headers)
    if operator is not None:
        return operator.actor
    claimed = headers.get(ACTOR_HEADER) or "anonymous"
    return UNVERIFIED_PREFIX + claimed if claimed.startswith(OPERATOR_PREFIX) else claimed
