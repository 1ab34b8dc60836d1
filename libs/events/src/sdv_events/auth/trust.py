"""The suite's chain of trust: operator → accounts → users, as nkeys kept in one file.

- operator (identity key stays with whoever set the suite up) and an operator *signing* key,
  which signs account JWTs: the registry holds it to re-issue the app account with revocations;
- the system account `SYS` (server events, claim updates) and its user;
- the app account `SDV` (JetStream on) whose *signing* key signs every user: services (full
  rights in the account), the shared enrolment user and each accepted device.

`Trust.generate()` makes all keys; `save`/`load` keep their seeds in a JSON file readable by its
owner only. JWTs are derived from the seeds whenever needed, so the file holds nothing stale.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nkeys

from sdv_events.auth.claims import FULL_RIGHTS, Permissions, UserSpec, account_claims, operator_claims
from sdv_events.auth.creds import format_creds
from sdv_events.auth.jwt import encode_jwt
from sdv_events.auth.keys import Role, keypair_from_seed, new_keypair, public_key, seed_of
from sdv_events.auth.permissions import enrolment_permissions

OPERATOR_NAME = "sdv"
SYSTEM_ACCOUNT_NAME = "SYS"
APP_ACCOUNT_NAME = "SDV"
_FIELDS = ("operator", "operator_signing", "system_account", "system_user", "account",
           "account_signing", "service_user", "enrol_user")


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Trust:
    operator: nkeys.KeyPair
    operator_signing: nkeys.KeyPair
    system_account: nkeys.KeyPair
    system_user: nkeys.KeyPair
    account: nkeys.KeyPair
    account_signing: nkeys.KeyPair
    service_user: nkeys.KeyPair
    enrol_user: nkeys.KeyPair

    @classmethod
    def generate(cls) -> Trust:
        roles = {"operator": Role.OPERATOR, "operator_signing": Role.OPERATOR,
                 "system_account": Role.ACCOUNT, "account": Role.ACCOUNT,
                 "account_signing": Role.ACCOUNT}
        return cls(**{name: new_keypair(roles.get(name, Role.USER)) for name in _FIELDS})

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({name: seed_of(getattr(self, name)) for name in _FIELDS}, indent=2)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(data)
        return path

    @classmethod
    def load(cls, path: Path) -> Trust:
        seeds = json.loads(path.read_text())
        return cls(**{name: keypair_from_seed(seeds[name]) for name in _FIELDS})

    @classmethod
    def load_or_create(cls, path: Path) -> Trust:
        if path.exists():
            return cls.load(path)
        trust = cls.generate()
        trust.save(path)
        return trust

    # --- public keys -----------------------------------------------------------------------

    @property
    def account_key(self) -> str:
        return public_key(self.account)

    @property
    def system_account_key(self) -> str:
        return public_key(self.system_account)

    # --- JWTs ------------------------------------------------------------------------------

    def operator_jwt(self) -> str:
        claims = operator_claims(public_key(self.operator), OPERATOR_NAME, self.system_account_key,
                                 [public_key(self.operator_signing)])
        return encode_jwt(claims, self.operator, issued_at=_now())

    def system_account_jwt(self) -> str:
        claims = account_claims(self.system_account_key, SYSTEM_ACCOUNT_NAME, jetstream=False)
        return encode_jwt(claims, self.operator_signing, issued_at=_now())

    def account_jwt(self, revocations: Mapping[str, int] | None = None,
                    *, issued_at: int | None = None) -> str:
        """The app account; `revocations` maps user public keys to the unix second at and before
        which their JWTs no longer count."""
        claims = account_claims(self.account_key, APP_ACCOUNT_NAME, jetstream=True,
                                signing_keys=[public_key(self.account_signing)],
                                revocations=revocations)
        return encode_jwt(claims, self.operator_signing, issued_at=issued_at or _now())

    def user_jwt(self, user_public_key: str, name: str, permissions: Permissions = FULL_RIGHTS,
                 *, expires_at: int | None = None, issued_at: int | None = None) -> str:
        """A user of the app account, signed by its signing key (devices bring their own key)."""
        spec = UserSpec(user_public_key, name, self.account_key, permissions, expires_at)
        return encode_jwt(spec.claims(), self.account_signing, issued_at=issued_at or _now())

    def system_user_jwt(self) -> str:
        spec = UserSpec(public_key(self.system_user), "sys", self.system_account_key)
        claims = spec.claims()
        del claims["nats"]["issuer_account"]  # signed by the system account's identity key
        return encode_jwt(claims, self.system_account, issued_at=_now())

    # --- credentials (JWT + seed, the `.creds` format every NATS client reads) --------------

    def service_creds(self, name: str = "service") -> str:
        jwt = self.user_jwt(public_key(self.service_user), name)
        return format_creds(jwt, seed_of(self.service_user))

    def enrol_creds(self) -> str:
        jwt = self.user_jwt(public_key(self.enrol_user), "enrol", enrolment_permissions())
        return format_creds(jwt, seed_of(self.enrol_user))

    def system_creds(self) -> str:
        return format_creds(self.system_user_jwt(), seed_of(self.system_user))
