"""The operator roles table, the operators account and the actor a request is recorded with —
pure checks, no server (the server's side: tests/integration/test_operator_permissions.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdv_events.auth import (
    DeviceAuthority,
    NoOperatorsKey,
    Role,
    Trust,
    decode_jwt,
    new_keypair,
    public_key,
)
from sdv_events.auth.accounts import DEVICES_TO_OPERATOR_STREAMS, TO_DEVICE_SERVICES, TO_OPERATOR_SERVICES
from sdv_events.auth.creds import jwt_of_creds
from sdv_events.auth.jwt import encode_jwt
from sdv_events.auth.roles import (
    COMMAND_ROLES,
    JS_API_PREFIX,
    OP_ROLES,
    ROLE_CLAIM,
    ROLES,
    jetstream_prefix,
    operator_of_creds,
    role_permissions,
)
from sdv_events.bus.actor import REQUEST_INFO_HEADER, actor_of, verified_operator

ROOT = Path(__file__).resolve().parents[2]


def _contract_channels() -> set[str]:
    doc = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    return {c["address"] for c in doc["channels"].values() if c.get("address")}


def test_every_command_of_the_bus_contract_has_a_row_and_every_row_a_command() -> None:
    """A command added to a service without a row here fails this test: decide who may send it
    (until then the server lets only admins)."""
    commands = {a.removeprefix("sdv.cmd.") for a in _contract_channels() if a.startswith("sdv.cmd.")}
    assert set(COMMAND_ROLES) == commands
    ops = {a.rsplit(".", 1)[1] for a in _contract_channels() if a.startswith("sdv.device.")}
    assert set(OP_ROLES) == ops


def test_roles_widen_viewer_to_operator_to_admin() -> None:
    viewer, operator = (set(role_permissions(r).pub_allow) for r in ("viewer", "operator"))
    assert viewer < operator
    assert {"sdv.cmd.>", "sdv.device.*.ops.>"} <= set(role_permissions("admin").pub_allow)
    assert "sdv.cmd.orchestrator.create" in operator - viewer
    assert "sdv.cmd.registry.accept" not in operator
    assert "sdv.cmd.registry.add_operator" not in operator
    assert "$O.sdv_uploads.>" in operator - viewer
    # Nobody but an admin rebuilds read models.
    assert not [s for s in operator if s.endswith(".rebuild")]
    for role in ROLES:  # and no role reads anything but its replies and console lines
        assert set(role_permissions(role).sub_allow) == {"_INBOX.>", "sdv.logs.>"}


def test_the_operators_account_imports_only_what_the_roles_use_with_the_requester_shared() -> None:
    trust = Trust.generate()
    app = decode_jwt(trust.account_jwt())["nats"]
    ops = decode_jwt(trust.operators_account_jwt())["nats"]
    devices = decode_jwt(trust.devices_account_jwt())["nats"]
    exported = {(e["subject"], e["type"]) for e in app["exports"]}
    from_app = [i for i in ops["imports"] if i["account"] == trust.account_key]
    from_devices = [i for i in ops["imports"] if i["account"] == trust.devices_account_key]
    assert {(i["subject"], i["type"]) for i in from_app} <= exported
    assert {(i["subject"], i["type"]) for i in from_devices} <= {
        (e["subject"], e["type"]) for e in devices["exports"]}
    assert {i["subject"] for i in from_app} == set(TO_OPERATOR_SERVICES)
    assert {(i["subject"], i["type"]) for i in from_devices} == {
        *((s, "service") for s in TO_DEVICE_SERVICES), *((s, "stream") for s in DEVICES_TO_OPERATOR_STREAMS)}
    # Every request crosses with the server's Nats-Request-Info (the actor's source).
    assert all(i.get("share") is True for i in ops["imports"] if i["type"] == "service")
    # The JetStream API arrives under the prefix an account without JetStream does not answer.
    assert all(i["local_subject"].startswith(JS_API_PREFIX) for i in from_app
               if i["subject"].startswith("$JS.API."))
    assert not [i for i in from_app if i["subject"].startswith(("sdv.evt", "$KV", "$JS.API.STREAM.DELETE",
                                                                "$JS.API.STREAM.PURGE", "$JS.API.CONSUMER"))]
    assert "disk_storage" not in ops["limits"]


def test_an_operators_jwt_names_it_carries_its_roles_permissions_and_is_signed_for_its_account(
        tmp_path: Path) -> None:
    trust = Trust.generate()
    authority = DeviceAuthority.load(trust.authority().save(tmp_path / "registry-trust.json"))
    key = public_key(new_keypair(Role.USER))
    claims = decode_jwt(authority.operator_jwt(key, "ann", "viewer"))
    assert (claims["sub"], claims["name"], claims[ROLE_CLAIM]) == (key, "ann", "viewer")
    assert claims["iss"] == public_key(trust.operators_signing)
    assert claims["nats"]["issuer_account"] == trust.operators_account_key
    assert claims["nats"]["pub"]["allow"] == list(role_permissions("viewer").pub_allow)
    creds = trust.operator_creds()  # the bootstrap admin of `sdv up`
    assert operator_of_creds(creds) == ("admin", "admin")
    assert jetstream_prefix(creds) == JS_API_PREFIX
    assert jetstream_prefix(trust.service_creds()) is None


def test_a_registry_trust_file_from_before_operators_signs_no_operator(tmp_path: Path) -> None:
    trust = Trust.generate()
    path = trust.authority().save(tmp_path / "registry-trust.json")
    old = json.loads(path.read_text())
    del old["operators_account"], old["operators_signing"]
    path.write_text(json.dumps(old))
    authority = DeviceAuthority.load(path)
    assert authority.devices_account == trust.devices_account_key  # devices go on as before
    with pytest.raises(NoOperatorsKey, match="restart `sdv up`"):
        authority.operator_jwt(public_key(new_keypair(Role.USER)), "ann", "viewer")


def test_a_trust_file_from_before_operators_gains_their_account_and_keeps_every_other_key(
        tmp_path: Path) -> None:
    trust = Trust.generate()
    path = trust.save(tmp_path / "trust.json")
    old = json.loads(path.read_text())
    del old["operators_account"], old["operators_signing"]
    path.write_text(json.dumps(old))
    upgraded = Trust.load_or_create(path)
    for name in ("operator", "account", "account_signing", "devices_account", "devices_signing"):
        assert public_key(getattr(upgraded, name)) == public_key(getattr(trust, name)), name
    assert Trust.load(path).operators_account_key == upgraded.operators_account_key


def _stamped(trust: Trust, creds: str, *, user: str | None = None) -> dict[str, str]:
    """The header nats-server stamps on a request of the user of `creds`."""
    jwt = jwt_of_creds(creds)
    return {REQUEST_INFO_HEADER: json.dumps({"acc": trust.operators_account_key,
                                             "user": user or decode_jwt(jwt)["sub"], "jwt": jwt})}


def test_the_actor_is_the_name_in_the_jwt_the_server_stamped_and_nothing_the_client_says() -> None:
    trust = Trust.generate()
    ann = trust.operator_creds("ann", "operator")
    assert actor_of(_stamped(trust, ann) | {"Sdv-Actor": "operator:admin"}) == "operator:ann"
    assert verified_operator(_stamped(trust, ann)) is not None
    # A header that does not hold together is no operator: a JWT of another key than the user's.
    assert verified_operator(_stamped(trust, ann, user="U" + "A" * 55)) is None
    # A JWT without a role (a service's) is no operator either; then the claim stands.
    assert actor_of(_stamped(trust, trust.service_creds()) | {"Sdv-Actor": "service:x"}) == "service:x"
    assert actor_of({REQUEST_INFO_HEADER: "{not json"}) == "anonymous"
    # A claim to be an operator is recorded as a claim.
    assert actor_of({"Sdv-Actor": "operator:admin"}) == "unverified:operator:admin"
    assert actor_of({"Sdv-Actor": "policy:nightly"}) == "policy:nightly"


def test_a_role_claim_the_jwt_does_not_know_is_no_role() -> None:
    trust = Trust.generate()
    key = new_keypair(Role.USER)
    claims = {"sub": public_key(key), "name": "x", ROLE_CLAIM: "root", "nats": {"type": "user"}}
    jwt = encode_jwt(claims, trust.operators_signing, issued_at=1)
    header = {REQUEST_INFO_HEADER: json.dumps({"user": public_key(key), "jwt": jwt})}
    assert verified_operator(header) is None
