"""Claims of the three NATS JWT kinds the suite issues: operator, account and user.

Field names follow nats-io/jwt v2 (`nats.type`, `nats.version = 2`). Durations (the `resp`
TTL) are nanoseconds, as Go's `time.Duration` marshals them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

UNLIMITED = -1


@dataclass(frozen=True)
class Permissions:
    """A user's publish/subscribe allow lists. Empty lists with `restricted=False` mean no
    permission section at all: full rights inside the account (service users)."""

    pub_allow: Sequence[str] = ()
    sub_allow: Sequence[str] = ()
    # Exceptions inside what the allow lists grant (nats-server applies deny after allow).
    pub_deny: Sequence[str] = ()
    sub_deny: Sequence[str] = ()
    # Replying to requests needs a response permission: max replies per request, and for how long.
    resp_max: int | None = None
    resp_ttl_s: float = 0.0
    restricted: bool = True

    def claims(self) -> dict[str, Any]:
        if not self.restricted:
            return {}
        out: dict[str, Any] = {"pub": _section(self.pub_allow, self.pub_deny),
                               "sub": _section(self.sub_allow, self.sub_deny)}
        if self.resp_max is not None:
            out["resp"] = {"max": self.resp_max, "ttl": int(self.resp_ttl_s * 1e9)}
        return out


def _section(allow: Sequence[str], deny: Sequence[str]) -> dict[str, list[str]]:
    if not allow:
        return {"deny": [">"]}
    return {"allow": list(allow), **({"deny": list(deny)} if deny else {})}


FULL_RIGHTS = Permissions(restricted=False)


def operator_claims(operator: str, name: str, system_account: str,
                    signing_keys: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "sub": operator, "name": name,
        "nats": {"system_account": system_account, "signing_keys": list(signing_keys),
                 "type": "operator", "version": 2},
    }


def account_limits(*, jetstream: bool) -> dict[str, Any]:
    limits: dict[str, Any] = {
        "subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED, "imports": UNLIMITED,
        "exports": UNLIMITED, "wildcards": True, "conn": UNLIMITED, "leaf": UNLIMITED,
    }
    if jetstream:  # non-zero storage limits are what enables JetStream for an account
        limits |= {"mem_storage": UNLIMITED, "disk_storage": UNLIMITED, "streams": UNLIMITED,
                   "consumer": UNLIMITED}
    return limits


def account_claims(
    account: str,
    name: str,
    *,
    jetstream: bool,
    signing_keys: Sequence[str] = (),
    revocations: Mapping[str, int] | None = None,
    exports: Sequence[dict[str, Any]] = (),
    imports: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """`revocations`: user public key → unix seconds; the server refuses (and disconnects)
    that user's JWTs issued at or before that time."""
    nats: dict[str, Any] = {
        "limits": account_limits(jetstream=jetstream),
        "signing_keys": list(signing_keys),
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account", "version": 2,
    }
    if revocations:
        nats["revocations"] = dict(sorted(revocations.items()))
    if exports:
        nats["exports"] = list(exports)
    if imports:
        nats["imports"] = list(imports)
    return {"sub": account, "name": name, "nats": nats}


def export(subject: str, kind: str) -> dict[str, Any]:
    """A public export (any account may import it). `kind` is "service" (requests cross, the
    reply is mapped back through a `_R_` subject of the exporter's) or "stream" (messages only).
    Every service the suite exports answers with one message per request."""
    out: dict[str, Any] = {"name": subject, "subject": subject, "type": kind}
    if kind == "service":
        out["response_type"] = "Singleton"
    return out


def import_(subject: str, kind: str, from_account: str, *, local_subject: str | None = None,
            share: bool = False) -> dict[str, Any]:
    """Importing `from_account`'s export of `subject`, under `local_subject` (default: the same
    subject). `share` (service imports): the server stamps each request that crosses with a
    `Nats-Request-Info` header naming the requester — its account, user key and the user JWT
    it authenticated with — replacing any header of that name the client set."""
    out: dict[str, Any] = {"name": local_subject or subject, "subject": subject,
                           "account": from_account, "type": kind,
                           "local_subject": local_subject or subject}
    if share:
        out["share"] = True
    return out


@dataclass(frozen=True)
class UserSpec:
    """What a user JWT says: who (public key), in which account, with which rights, until when."""

    public_key: str
    name: str
    account: str
    permissions: Permissions = FULL_RIGHTS
    expires_at: int | None = None  # unix seconds
    tags: Sequence[str] = field(default_factory=tuple)
    # Claims of the suite's own beside the standard ones (nats-server ignores what it does not
    # know), e.g. the signing keys a device is to trust (suite_keys.py).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def claims(self) -> dict[str, Any]:
        nats: dict[str, Any] = {
            **self.permissions.claims(),
            "subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED,
            # Signed by the account's signing key, not its identity key: name the account.
            "issuer_account": self.account,
            "type": "user", "version": 2,
        }
        if self.tags:
            nats["tags"] = list(self.tags)
        out: dict[str, Any] = {**self.extra, "sub": self.public_key, "name": self.name, "nats": nats}
        if self.expires_at is not None:
            out["exp"] = self.expires_at
        return out
