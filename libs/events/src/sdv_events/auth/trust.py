"""The suite's chain of trust: operator → accounts → users, as nkeys kept in one file.

- operator (identity key stays with whoever set the suite up) and an operator *signing* key,
  which signs account JWTs;
- the system account `SYS` (server events, claim updates) and its user;
- the app account `SDV` (JetStream on): every stream and bucket, and the services' user (full
  rights in the account), signed by the account's signing key;
- the devices account `DEVICES` (no JetStream): each accepted device and the shared enrolment
  user, signed by its own signing key. It imports from `SDV` only what devices use
  (`accounts.py`), so the reply subjects devices choose stay out of the app account;
- the operators account `OPERATORS` (no JetStream): people, each a user of its own with the
  permissions of its role (`roles.py`), signed by the account's signing key. It reaches commands
  and ops through service imports that make the server vouch for who asks (`accounts.py`).

The registry never gets this file: `authority()` is the part it signs with (`authority.py`:
the devices and operators accounts' signing keys, the operator signing key to re-issue those
accounts with revocations, the system user to push them), saved to a file of its own.

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

from sdv_events.auth.accounts import app_account_claims
from sdv_events.auth.authority import DeviceAuthority, OperatorsKeys
from sdv_events.auth.claims import FULL_RIGHTS, Permissions, UserSpec, account_claims, operator_claims
from sdv_events.auth.creds import format_creds
from sdv_events.auth.jwt import encode_jwt
from sdv_events.auth.keys import Role, keypair_from_seed, new_keypair, public_key, seed_of
from sdv_events.auth.permissions import enrolment_permissions
from sdv_events.auth.roles import BOOTSTRAP_ADMIN, OperatorRole
from sdv_events.auth.service_permissions import service_permissions

OPERATOR_NAME = "sdv"
SYSTEM_ACCOUNT_NAME = "SYS"
_ROLES = {"operator": Role.OPERATOR, "operator_signing": Role.OPERATOR, "system_account": Role.ACCOUNT,
          "system_user": Role.USER, "account": Role.ACCOUNT, "account_signing": Role.ACCOUNT,
          "service_user": Role.USER, "enrol_user": Role.USER, "devices_account": Role.ACCOUNT,
          "devices_signing": Role.ACCOUNT, "operators_account": Role.ACCOUNT,
          "operators_signing": Role.ACCOUNT}
# Added when devices got an account of their own; files made before lack them.
_DEVICES_KEYS = ("devices_account", "devices_signing")
# Added when operators got an account of their own (their users were in the app account).
_OPERATORS_KEYS = ("operators_account", "operators_signing")


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
    devices_account: nkeys.KeyPair
    devices_signing: nkeys.KeyPair
    operators_account: nkeys.KeyPair
    operators_signing: nkeys.KeyPair

    @classmethod
    def generate(cls) -> Trust:
        return cls(**{name: new_keypair(role) for name, role in _ROLES.items()})

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({name: seed_of(getattr(self, name)) for name in _ROLES}, indent=2)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(data)
        return path

    @classmethod
    def load(cls, path: Path) -> Trust:
        seeds = json.loads(path.read_text())
        return cls(**{name: keypair_from_seed(seeds[name]) for name in _ROLES})

    @classmethod
    def load_or_create(cls, path: Path) -> Trust:
        if not path.exists():
            trust = cls.generate()
            trust.save(path)
            return trust
        seeds = json.loads(path.read_text())
        if any(name not in seeds for name in _DEVICES_KEYS):
            # Made when devices were users of the app account. Keep the operator and the app
            # account (JetStream keeps its data under the account's key) but give the app
            # account a new signing key: device JWTs it signed stop counting, and every device
            # enrols again, into the devices account.
            seeds |= {name: seed_of(new_keypair(Role.ACCOUNT))
                      for name in (*_DEVICES_KEYS, "account_signing")}
            path.write_text(json.dumps(seeds))  # the mode stays the owner's only
        if any(name not in seeds for name in _OPERATORS_KEYS):
            # Made when operators were users of the app account: their credentials were written
            # anew at every start, so nothing else changes.
            seeds |= {name: seed_of(new_keypair(Role.ACCOUNT)) for name in _OPERATORS_KEYS}
            path.write_text(json.dumps(seeds))
        return cls.load(path)

    # --- public keys -----------------------------------------------------------------------

    @property
    def account_key(self) -> str:
        return public_key(self.account)

    @property
    def devices_account_key(self) -> str:
        return public_key(self.devices_account)

    @property
    def operators_account_key(self) -> str:
        return public_key(self.operators_account)

    @property
    def system_account_key(self) -> str:
        return public_key(self.system_account)

    # --- what the registry gets --------------------------------------------------------------

    def authority(self) -> DeviceAuthority:
        return DeviceAuthority(
            operator_signing=self.operator_signing, devices_account=self.devices_account_key,
            devices_signing=self.devices_signing, app_account=self.account_key,
            system_user=self.system_user, system_user_jwt=self.system_user_jwt(),
            operators=OperatorsKeys(self.operators_account_key, self.operators_signing),
        )

    # --- JWTs ------------------------------------------------------------------------------

    def operator_jwt(self) -> str:
        claims = operator_claims(public_key(self.operator), OPERATOR_NAME, self.system_account_key,
                                 [public_key(self.operator_signing)])
        return encode_jwt(claims, self.operator, issued_at=_now())

    def system_account_jwt(self) -> str:
        claims = account_claims(self.system_account_key, SYSTEM_ACCOUNT_NAME, jetstream=False)
        return encode_jwt(claims, self.operator_signing, issued_at=_now())

    def account_jwt(self, *, issued_at: int | None = None) -> str:
        """The app account: JetStream, exports to and imports from the devices account."""
        claims = app_account_claims(self.account_key, public_key(self.account_signing),
                                    self.devices_account_key)
        return encode_jwt(claims, self.operator_signing, issued_at=issued_at or _now())

    def devices_account_jwt(self, revocations: Mapping[str, int] | None = None,
                            *, issued_at: int | None = None) -> str:
        """The devices account; `revocations` maps device public keys to the unix second at and
        before which their JWTs no longer count."""
        return self.authority().devices_account_jwt(revocations, issued_at=issued_at)

    def operators_account_jwt(self, revocations: Mapping[str, int] | None = None,
                              *, issued_at: int | None = None) -> str:
        """The operators account; `revocations` as for the devices account."""
        return self.authority().operators_account_jwt(revocations, issued_at=issued_at)

    def user_jwt(self, user_public_key: str, name: str, permissions: Permissions = FULL_RIGHTS,
                 *, expires_at: int | None = None, issued_at: int | None = None) -> str:
        """A user of the app account (services), signed by its signing key."""
        spec = UserSpec(user_public_key, name, self.account_key, permissions, expires_at)
        return encode_jwt(spec.claims(), self.account_signing, issued_at=issued_at or _now())

    def device_jwt(self, user_public_key: str, name: str, permissions: Permissions,
                   *, expires_at: int | None = None, issued_at: int | None = None) -> str:
        """A user of the devices account (what the registry mints for an accepted device)."""
        return self.authority().device_jwt(user_public_key, name, permissions,
                                           expires_at=expires_at, issued_at=issued_at)

    def system_user_jwt(self) -> str:
        spec = UserSpec(public_key(self.system_user), "sys", self.system_account_key)
        claims = spec.claims()
        del claims["nats"]["issuer_account"]  # signed by the system account's identity key
        return encode_jwt(claims, self.system_account, issued_at=_now())

    # --- credentials (JWT + seed, the `.creds` format every NATS client reads) --------------

    def service_creds(self, name: str = "service") -> str:
        """A user with every right in the app account: for tests and tools that set things up,
        never handed to a running service (`service_user_creds`) or an operator (`operator_creds`)."""
        jwt = self.user_jwt(public_key(self.service_user), name)
        return format_creds(jwt, seed_of(self.service_user))

    def service_user_creds(self, service: str) -> str:
        """`service`'s own user: only what that service does (`service_permissions.py`). A new
        key each time (nothing to keep: the JWT names it, the account's signing key vouches)."""
        user = new_keypair(Role.USER)
        jwt = self.user_jwt(public_key(user), f"service:{service}", service_permissions(service))
        return format_creds(jwt, seed_of(user))

    def operator_creds(self, name: str = BOOTSTRAP_ADMIN, role: OperatorRole = "admin") -> str:
        """An operator of `role` in the operators account (`sdv up` and `sdv deploy init` write
        the bootstrap admin's; the registry issues the others, `sdv operators add`)."""
        user = new_keypair(Role.USER)
        jwt = self.authority().operator_jwt(public_key(user), name, role, issued_at=_now())
        return format_creds(jwt, seed_of(user))

    def enrol_creds(self) -> str:
        """The shared enrolment user, in the devices account."""
        jwt = self.device_jwt(public_key(self.enrol_user), "enrol", enrolment_permissions())
        return format_creds(jwt, seed_of(self.enrol_user))

    def system_creds(self) -> str:
        return format_creds(self.system_user_jwt(), seed_of(self.system_user))
