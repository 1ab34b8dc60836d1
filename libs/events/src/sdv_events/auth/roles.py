"""Operator roles: what a viewer, an operator and an admin may ask of the suite — the one table,
enforced by nats-server through each operator user's publish permissions (`role_permissions`).

Operators are users of the account `OPERATORS` (`accounts.py`), which reaches the services'
command subjects and the devices' ops subjects only through service imports; so a request a
role may not send is refused by the server ("permissions violation") before any service sees
it, and every request that arrives carries the requester's verified identity
(`sdv_events.bus.actor`).

- viewer: queries only (get, list, history, status, audit, verify, ping, public keys) and
  reading: apps' console lines, package artifacts, devices' reported state;
- operator: a viewer's rights, plus rollouts and release policies, package publish, promote and
  yank (uploads), acknowledging alerts, and apps' ops on devices (pause, resume, stop, start,
  restart, stdin);
- admin: every command (devices' admission and labels, operators, rebuilds, and any command
  this table does not name yet) and every op.

Every command subject of the bus contract (docs/asyncapi.json) is listed below with the least
role that may send it (a test keeps the two in step): a command added without a row is an
admin's only until someone decides otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import get_args

from sdv_events.auth.claims import Permissions
from sdv_events.auth.creds import jwt_of_creds
from sdv_events.auth.jwt import InvalidJwt, decode_jwt
from sdv_events.provisioning import PACKAGES_BUCKET, REPORTED_BUCKET, UPLOADS_BUCKET
from sdv_events.schemas.device_ops import ALL_OPS, APP_OPS
from sdv_events.schemas.operators import OperatorRole as OperatorRole  # re-exported
from sdv_events.subjects import command_subject

ROLES: tuple[OperatorRole, ...] = get_args(OperatorRole)
# The operator `sdv up` and `sdv deploy init` write (`operator.creds`): an admin minted from the
# chain of trust itself, not by the registry, so no registered operator may take its name.
BOOTSTRAP_ADMIN = "admin"
# The claim of an operator's user JWT naming its role (nats-server ignores claims it does not
# know; the role is enforced by the permissions in the same JWT, this only reports it).
ROLE_CLAIM = "sdv_operator_role"
# Operators reach the app account's JetStream API under this prefix (`accounts.py`: an account
# without JetStream answers `$JS.API.>` itself, so imports under that name would never arrive).
JS_API_PREFIX = "$JS.SDV.API"

_V: OperatorRole = "viewer"
_O: OperatorRole = "operator"
_A: OperatorRole = "admin"
COMMAND_ROLES: Mapping[str, OperatorRole] = MappingProxyType({
    # packager
    "packager.get": _V, "packager.list": _V, "packager.history": _V, "packager.ping": _V,
    "packager.signing_key": _V, "packager.verify": _V,
    "packager.publish": _O, "packager.promote": _O, "packager.yank": _O,
    "packager.rebuild": _A,
    # registry
    "registry.get": _V, "registry.list": _V, "registry.count": _V, "registry.resolve": _V,
    "registry.stats": _V, "registry.history": _V, "registry.ping": _V, "registry.verify": _V,
    "registry.list_operators": _V,
    "registry.accept": _A, "registry.reject": _A, "registry.decommission": _A,
    "registry.preauthorize": _A, "registry.set_labels": _A, "registry.rebuild": _A,
    "registry.add_operator": _A, "registry.revoke_operator": _A,
    # orchestrator
    "orchestrator.get": _V, "orchestrator.list": _V, "orchestrator.history": _V,
    "orchestrator.list_policies": _V, "orchestrator.ping": _V, "orchestrator.public_key": _V,
    "orchestrator.verify": _V,
    "orchestrator.create": _O, "orchestrator.start": _O, "orchestrator.pause": _O,
    "orchestrator.resume": _O, "orchestrator.cancel": _O, "orchestrator.rollback": _O,
    "orchestrator.activate": _O,
    "orchestrator.set_policy": _O, "orchestrator.delete_policy": _O,
    "orchestrator.rebuild": _A,
    # monitor
    "monitor.alerts": _V, "monitor.audit": _V, "monitor.device": _V, "monitor.fleet": _V,
    "monitor.history": _V, "monitor.ping": _V, "monitor.status": _V, "monitor.verify": _V,
    "monitor.ack_alert": _O,
    "monitor.rebuild": _A,
})
# Ops on a device's apps (`sdv.device.<device_id>.ops.<op>`, served by its agent).
OP_ROLES: Mapping[str, OperatorRole] = MappingProxyType({
    "logs": _V, **{op: _O for op in (*APP_OPS, "stdin")}})
assert set(OP_ROLES) == set(ALL_OPS), "every op of the agent has a role"

_READS = (
    f"{JS_API_PREFIX}.DIRECT.GET.OBJ_{PACKAGES_BUCKET}",  # artifacts: a chunk by sequence
    f"{JS_API_PREFIX}.DIRECT.GET.OBJ_{PACKAGES_BUCKET}.>",  # an artifact's metadata by subject
    f"{JS_API_PREFIX}.DIRECT.GET.KV_{REPORTED_BUCKET}.>",  # what a device reports
)
_UPLOADS = (
    f"{JS_API_PREFIX}.STREAM.INFO.OBJ_{UPLOADS_BUCKET}",
    f"{JS_API_PREFIX}.STREAM.MSG.GET.OBJ_{UPLOADS_BUCKET}",
    f"$O.{UPLOADS_BUCKET}.>",
)


def _rank(role: OperatorRole) -> int:
    return ROLES.index(role)


def may(role: OperatorRole, least: OperatorRole) -> bool:
    return _rank(role) >= _rank(least)


def command_subjects(role: OperatorRole) -> tuple[str, ...]:
    """The command subjects `role` may publish (an admin: all of them, `sdv.cmd.>`)."""
    if role == "admin":
        return ("sdv.cmd.>",)
    return tuple(command_subject(*name.split(".", 1)) for name, least in COMMAND_ROLES.items()
                 if may(role, least))


def op_subjects(role: OperatorRole) -> tuple[str, ...]:
    if role == "admin":
        return ("sdv.device.*.ops.>",)
    return tuple(f"sdv.device.*.ops.{op}" for op, least in OP_ROLES.items() if may(role, least))


def role_permissions(role: OperatorRole) -> Permissions:
    """An operator user's permissions inside `OPERATORS`: the commands and ops of its role, the
    reads every role has, uploads from `operator` up. Replies come to its inbox; console lines
    arrive by the stream import of `sdv.logs.>` (from the devices account). Nothing else is
    imported into the account, so nothing else (events, desired state, JetStream management) is
    reachable at all."""
    uploads = _UPLOADS if may(role, "operator") else ()
    return Permissions(
        pub_allow=(*command_subjects(role), *op_subjects(role), *_READS, *uploads),
        sub_allow=("_INBOX.>", "sdv.logs.>"),
    )


def role_of_claims(claims: Mapping[str, object]) -> OperatorRole | None:
    """The role an operator's user JWT names (None: not an operator's JWT)."""
    role = claims.get(ROLE_CLAIM)
    return next((r for r in ROLES if r == role), None)



def operator_of_creds(creds_text: str | None) -> tuple[str, OperatorRole] | None:
    """(name, role) of an operator's `.creds` (as its JWT says; the server checks the JWT),
    else None (a service's credentials, or none at all)."""
    if not creds_text:
        return None
    try:
        claims = decode_jwt(jwt_of_creds(creds_text), verify=False)
    except (ValueError, InvalidJwt):
        return None
    role = role_of_claims(claims)
    return None if role is None else (str(claims.get("name", "")), role)


def jetstream_prefix(creds_text: str | None) -> str | None:
    """The JetStream API prefix a client connected with these `.creds` uses: `JS_API_PREFIX`
    for an operator's (its account imports the app account's API under it), else None (the
    default `$JS.API`)."""
    return JS_API_PREFIX if operator_of_creds(creds_text) is not None else None


def jetstream_prefix_of_file(creds_path: str | None) -> str | None:
    """`jetstream_prefix` of a `.creds` file (None when there is none or it cannot be read)."""
    if not creds_path:
        return None
    try:
        with open(creds_path) as f:
            return jetstream_prefix(f.read())
    except OSError:
        return None
