"""The suite's signing keys in a device's credentials: how an agent enrolled with nothing but the
enrolment credentials learns which keys to trust, without an operator copying keys around.

The agent must know two Ed25519 public keys before it acts on anything: the packager's (every
package is signed with it) and the orchestrator's (every desired-state document). The registry
puts both — lists of them, for rotations — in a claim of its own (`CLAIM`) of the user JWT it
issues each accepted device. That JWT is signed by the devices account's signing key, which only
the registry holds (`DeviceAuthority`), and the agent already has a copy of that key's public
half it did not get from the bus: the issuer of the JWT in the enrolment credentials it was
installed with (`CredentialsPin.of_enrolment`). So the agent trusts the keys of a JWT only when
its signature verifies with that pinned issuer, it names the devices account of the enrolment
credentials and this device's own public key, and it is not older than the JWT the keys were
learned from last. Someone on the bus can read such a JWT (it holds no secret) but cannot make
one: a changed claim breaks the signature, a JWT of another device names another key, and an
old JWT of this device (before a rotation took a compromised key out) is older than the one
the agent holds.

Rotation: the registry lists every key valid at the moment (`SDV_REGISTRY_PACKAGER_KEYS`,
`SDV_REGISTRY_ORCHESTRATOR_KEYS`: old and new during a rotation), agents take the new list with
their next credentials (a renewal or a restart), and a signature by any key of the list counts.

Pure: no I/O. nats-server ignores claims it does not know (checked by the agent tests, which
connect with such JWTs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from sdv_events.auth.jwt import InvalidJwt, decode_jwt
from sdv_events.desired_signing import parse_public_key

CLAIM = "sdv_signing_keys"  # top-level claim of a device's user JWT


class SuiteKeys(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Base64 Ed25519 public keys whose signatures count (several during a rotation)."""

    packager: tuple[str, ...] = ()
    orchestrator: tuple[str, ...] = ()

    def claims(self) -> dict[str, Any]:
        return {CLAIM: {"packager": list(self.packager), "orchestrator": list(self.orchestrator)}}

    @property
    def complete(self) -> bool:
        return bool(self.packager) and bool(self.orchestrator)


class UntrustedCredentials(ValueError):
    """A JWT whose keys must not be trusted; the message says which check failed."""


@dataclass(frozen=True)
class LearnedKeys:
    keys: SuiteKeys
    issued_at: int  # the JWT's `iat`: a later JWT replaces them, an earlier one is refused


@dataclass(frozen=True)
class CredentialsPin:
    """What the agent checks issued credentials against: the devices account signing key and the
    devices account, both from the JWT of the enrolment credentials it was installed with."""

    issuer: str
    account: str

    @classmethod
    def of_enrolment(cls, enrol_jwt: str) -> CredentialsPin:
        claims = decode_jwt(enrol_jwt, verify=True)
        account = claims.get("nats", {}).get("issuer_account") or claims.get("iss")
        if not isinstance(claims.get("iss"), str) or not isinstance(account, str):
            raise InvalidJwt("the enrolment JWT names no issuer")
        return cls(issuer=claims["iss"], account=account)

    def keys_of(self, device_jwt: str, *, device_key: str, newer_than: int = 0) -> LearnedKeys | None:
        """The keys `device_jwt` carries (None: it carries none), once every check passed;
        `UntrustedCredentials` otherwise."""
        try:
            claims = decode_jwt(device_jwt, verify=True)
        except InvalidJwt as err:
            raise UntrustedCredentials(f"the credentials' JWT does not verify: {err}") from None
        if claims.get("iss") != self.issuer:
            raise UntrustedCredentials(
                f"signed by {str(claims.get('iss'))[:60]!r}, not by the devices signing key "
                f"{self.issuer} of the enrolment credentials")
        if claims.get("nats", {}).get("issuer_account") != self.account:
            raise UntrustedCredentials(f"not a user of the devices account {self.account}")
        if claims.get("sub") != device_key:
            raise UntrustedCredentials("issued to another key than this device's")
        issued_at = claims.get("iat")
        if not isinstance(issued_at, int):
            raise UntrustedCredentials("the JWT has no issue time")
        if issued_at < newer_than:
            raise UntrustedCredentials(
                f"issued at {issued_at}, before the credentials the keys were learned from "
                f"({newer_than}): an old JWT played back")
        raw = claims.get(CLAIM)
        if raw is None:
            return None
        try:
            keys = msgspec.convert(raw, SuiteKeys)
        except msgspec.ValidationError as err:
            raise UntrustedCredentials(f"the {CLAIM} claim is malformed: {err}") from None
        for key in (*keys.packager, *keys.orchestrator):
            try:
                parse_public_key(key)
            except ValueError as err:
                raise UntrustedCredentials(f"the {CLAIM} claim holds {key[:60]!r}, not an Ed25519 "
                                           f"public key: {err}") from None
        return LearnedKeys(keys, issued_at)
