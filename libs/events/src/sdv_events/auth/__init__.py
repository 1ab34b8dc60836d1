"""NATS decentralized auth for the suite: nkeys, JWTs, the operator/account/user chain of trust
(an app account for services, a devices account for devices, an operators account for people),
per-device permissions, operator roles, operator-mode server config and live revocation pushes.

Shared because `sdv up` (server config, service credentials), the registry (device credentials
and revocations, from `DeviceAuthority` only), agents (their own key pair) and tests all need
the same code.
"""

from sdv_events.auth.accounts import APP_ACCOUNT_NAME, DEVICES_ACCOUNT_NAME, OPERATORS_ACCOUNT_NAME
from sdv_events.auth.authority import DeviceAuthority, NoOperatorsKey, NotAnAuthorityFile
from sdv_events.auth.claims import FULL_RIGHTS, Permissions, UserSpec
from sdv_events.auth.claims_update import ClaimsUpdateFailed, push_account_jwt
from sdv_events.auth.creds import format_creds, raw_creds
from sdv_events.auth.jwt import InvalidJwt, decode_jwt, encode_jwt
from sdv_events.auth.keys import (
    InvalidPublicKey,
    Role,
    check_public_key,
    keypair_from_seed,
    new_keypair,
    public_key,
    seed_of,
)
from sdv_events.auth.permissions import (
    ANNOUNCE_PREFIX,
    ENROL_INBOX_PREFIX,
    RENEW_PREFIX,
    announce_subject,
    device_inbox_prefix,
    device_permissions,
    enrolment_permissions,
    renew_subject,
)
from sdv_events.auth.roles import BOOTSTRAP_ADMIN, ROLES, OperatorRole, role_permissions
from sdv_events.auth.server_config import render_server_config
from sdv_events.auth.trust import Trust

__all__ = [
    "ANNOUNCE_PREFIX", "APP_ACCOUNT_NAME", "BOOTSTRAP_ADMIN", "DEVICES_ACCOUNT_NAME", "ENROL_INBOX_PREFIX",
    "FULL_RIGHTS", "OPERATORS_ACCOUNT_NAME", "RENEW_PREFIX", "ROLES", "ClaimsUpdateFailed", "DeviceAuthority",
    "InvalidJwt", "InvalidPublicKey", "NoOperatorsKey", "NotAnAuthorityFile", "OperatorRole",
    "Permissions", "Role", "Trust", "UserSpec", "announce_subject",
    "check_public_key", "decode_jwt", "device_inbox_prefix", "device_permissions",
    "encode_jwt", "enrolment_permissions", "format_creds", "keypair_from_seed", "new_keypair",
    "public_key", "push_account_jwt", "raw_creds", "render_server_config", "renew_subject",
    "role_permissions", "seed_of",
]
