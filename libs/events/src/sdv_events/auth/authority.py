"""What the registry holds of the chain of trust: only the keys it signs with.

- the devices account's *signing* key, to mint each accepted device a user JWT (and nothing
  else: it names the devices account, which sees of the app account only what is imported);
- the operators account's *signing* key, to mint an operator (`sdv operators add`) a user JWT
  with its role's permissions (`roles.py`);
- an operator *signing* key, to re-issue the devices and operators account JWTs with
  revocations. This is the limit of the NATS model: an account JWT is valid only when an
  operator key signs it, and nats-server 2.15 has no operator signing key scoped to one account,
  so this key could sign any account. It is why the file stays with the registry, owner-only;
- the system user's JWT and seed, to push those account JWTs to the servers.

Not in it: the operator's identity seed, the app account's identity or signing seeds, the
system account's seed, any service or enrolment user's seed. `Trust.authority()` derives this
from the full chain of trust, which stays with whoever set the suite up (`sdv up`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nkeys

from sdv_events.auth.accounts import devices_account_claims, operators_account_claims
from sdv_events.auth.claims import Permissions, UserSpec
from sdv_events.auth.creds import format_creds
from sdv_events.auth.jwt import encode_jwt
from sdv_events.auth.keys import Role, check_public_key, keypair_from_seed, public_key, seed_of
from sdv_events.auth.roles import ROLE_CLAIM, OperatorRole, role_permissions
from sdv_events.auth.suite_keys import SuiteKeys

KIND = "sdv-registry-trust/v1"


class NotAnAuthorityFile(ValueError):
    """A file that is not the registry's trust file (e.g. the full chain of trust)."""


class NoOperatorsKey(ValueError):
    """A trust file written before operators had an account of their own: it cannot mint or
    revoke operators (`sdv up` rewrites it at its next start; re-run `sdv deploy init`)."""


@dataclass(frozen=True)
class OperatorsKeys:
    account: str  # the operators account's public key
    signing: nkeys.KeyPair


def _seed(seeds: Mapping[str, str], name: str, role: Role) -> nkeys.KeyPair:
    kp = keypair_from_seed(seeds[name])
    check_public_key(public_key(kp), role)
    return kp


@dataclass(frozen=True)
class DeviceAuthority:
    operator_signing: nkeys.KeyPair
    devices_account: str  # public keys only, for the claims
    devices_signing: nkeys.KeyPair
    app_account: str
    system_user: nkeys.KeyPair
    system_user_jwt: str
    operators: OperatorsKeys | None = None  # None: a file from before operators had an account

    # --- what it signs -----------------------------------------------------------------------

    def device_jwt(self, user_public_key: str, name: str, permissions: Permissions, *,
                   expires_at: int | None = None, issued_at: int | None = None,
                   signing_keys: SuiteKeys | None = None) -> str:
        """A user of the devices account, for a key the device made (its seed never left it);
        with `signing_keys`, the keys the device is to trust (suite_keys.py), signed with it."""
        spec = UserSpec(user_public_key, name, self.devices_account, permissions, expires_at,
                        extra=signing_keys.claims() if signing_keys is not None else {})
        return encode_jwt(spec.claims(), self.devices_signing, issued_at=issued_at or int(time.time()))

    def devices_account_jwt(self, revocations: Mapping[str, int] | None = None,
                            *, issued_at: int | None = None) -> str:
        claims = devices_account_claims(self.devices_account, public_key(self.devices_signing),
                                        self.app_account, revocations)
        return encode_jwt(claims, self.operator_signing, issued_at=issued_at or int(time.time()))

    def _operators(self) -> OperatorsKeys:
        if self.operators is None:
            raise NoOperatorsKey("this trust file has no operators account signing key: restart "
                                 "`sdv up` or re-run `sdv deploy init` to rewrite it")
        return self.operators

    def operator_jwt(self, user_public_key: str, name: str, role: OperatorRole, *,
                     issued_at: int | None = None, expires_at: int | None = None) -> str:
        """A user of the operators account with `role`'s permissions, named `name`: the name
        services record as the actor of what this user asks (`sdv_events.bus.actor`)."""
        keys = self._operators()
        spec = UserSpec(user_public_key, name, keys.account, role_permissions(role), expires_at,
                        extra={ROLE_CLAIM: role})
        return encode_jwt(spec.claims(), keys.signing, issued_at=issued_at or int(time.time()))

    def operators_account_jwt(self, revocations: Mapping[str, int] | None = None,
                              *, issued_at: int | None = None) -> str:
        keys = self._operators()
        claims = operators_account_claims(keys.account, public_key(keys.signing), self.app_account,
                                          self.devices_account, revocations)
        return encode_jwt(claims, self.operator_signing, issued_at=issued_at or int(time.time()))

    def system_creds(self) -> str:
        return format_creds(self.system_user_jwt, seed_of(self.system_user))

    # --- the file ----------------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        """Owner-only, also when `path` already existed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = {
            "kind": KIND,
            "operator_signing": seed_of(self.operator_signing),
            "devices_account": self.devices_account,
            "devices_signing": seed_of(self.devices_signing),
            "app_account": self.app_account,
            "system_user": seed_of(self.system_user),
            "system_user_jwt": self.system_user_jwt,
        }
        if self.operators is not None:
            fields |= {"operators_account": self.operators.account,
                       "operators_signing": seed_of(self.operators.signing)}
        data = json.dumps(fields, indent=2)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(data)
        return path

    @classmethod
    def load(cls, path: Path) -> DeviceAuthority:
        """`NotAnAuthorityFile` for anything else, naming what it is when it can."""
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise NotAnAuthorityFile(f"{path} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("kind") != KIND:
            hint = (" (it is the full chain of trust: give the registry the file `Trust.authority()`"
                    " writes, e.g. registry-trust.json of `sdv up`)"
                    if isinstance(data, dict) and "operator" in data else "")
            raise NotAnAuthorityFile(f"{path} is not a registry trust file ({KIND}){hint}")
        try:
            operators = None
            if "operators_account" in data:
                operators = OperatorsKeys(check_public_key(data["operators_account"], Role.ACCOUNT),
                                          _seed(data, "operators_signing", Role.ACCOUNT))
            return cls(
                operators=operators,
                operator_signing=_seed(data, "operator_signing", Role.OPERATOR),
                devices_account=check_public_key(data["devices_account"], Role.ACCOUNT),
                devices_signing=_seed(data, "devices_signing", Role.ACCOUNT),
                app_account=check_public_key(data["app_account"], Role.ACCOUNT),
                system_user=_seed(data, "system_user", Role.USER),
                system_user_jwt=str(data["system_user_jwt"]),
            )
        except (KeyError, ValueError, TypeError, nkeys.NkeysError) as exc:
            raise NotAnAuthorityFile(f"{path}: {type(exc).__name__}: {exc}") from None
