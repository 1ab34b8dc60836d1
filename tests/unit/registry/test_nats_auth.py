"""sdv_events.auth without a server: JWT encoding and verification, key checks, the device
permission set, the accounts, the registry's part of the trust and the operator-mode server
config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdv_events.auth import (
    DeviceAuthority,
    InvalidJwt,
    InvalidPublicKey,
    NotAnAuthorityFile,
    Role,
    Trust,
    check_public_key,
    decode_jwt,
    device_permissions,
    new_keypair,
    public_key,
    render_server_config,
)
from sdv_events.auth.accounts import TO_APP_SERVICES, TO_DEVICE_STREAMS
from sdv_events.auth.jwt import jti_of


def test_device_jwt_is_signed_by_the_devices_signing_key_and_names_the_devices_account() -> None:
    trust = Trust.generate()
    device = public_key(new_keypair(Role.USER))
    claims = decode_jwt(trust.device_jwt(device, "orin-1", device_permissions("orin-1"),
                                         expires_at=2_000_000_000, issued_at=1_900_000_000))
    assert claims["iss"] == public_key(trust.devices_signing)
    assert claims["nats"]["issuer_account"] == trust.devices_account_key != trust.account_key
    assert (claims["sub"], claims["exp"], claims["iat"]) == (device, 2_000_000_000, 1_900_000_000)
    assert claims["jti"] == jti_of(claims)
    assert claims["nats"]["resp"] == {"max": 1, "ttl": 300_000_000_000}


def test_a_tampered_jwt_does_not_verify() -> None:
    trust = Trust.generate()
    token = trust.user_jwt(public_key(new_keypair(Role.USER)), "x")
    header, _claims, sig = token.split(".")
    forged = decode_jwt(token)
    forged["name"] = "admin"
    import base64
    import json
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidJwt):
        decode_jwt(f"{header}.{body}.{sig}")
    with pytest.raises(InvalidJwt):
        decode_jwt("not.a-jwt")


def test_public_keys_are_checked_for_role_and_checksum() -> None:
    user = public_key(new_keypair(Role.USER))
    assert check_public_key(user, Role.USER) == user
    with pytest.raises(InvalidPublicKey, match="not a user key"):
        check_public_key(public_key(new_keypair(Role.ACCOUNT)), Role.USER)
    with pytest.raises(InvalidPublicKey, match="checksum"):
        check_public_key(user[:-1] + ("A" if user[-1] != "A" else "B"), Role.USER)
    with pytest.raises(InvalidPublicKey):
        check_public_key("U" * 10, Role.USER)


def test_device_permissions_name_only_that_device() -> None:
    perms = device_permissions("orin-7")
    for subject in [*perms.pub_allow, *perms.sub_allow]:
        assert "orin-7" in subject or subject.startswith("$JS.API.DIRECT.GET.OBJ_sdv_packages")
        assert subject not in {">", "sdv.>", "_INBOX.>"}
        # No stream info (it lists every device's key) and no consumer (deliver subject, durables).
        assert ".STREAM." not in subject
        assert ".CONSUMER." not in subject
        assert "$JS.FC." not in subject
    assert "_INBOX.orin-7.>" in perms.sub_allow


def test_trust_survives_a_save_and_load_with_owner_only_permissions(tmp_path: Path) -> None:
    trust = Trust.generate()
    path = trust.save(tmp_path / "trust.json")
    assert path.stat().st_mode & 0o777 == 0o600
    again = Trust.load(path)
    assert again.account_key == trust.account_key
    assert public_key(again.account_signing) == public_key(trust.account_signing)


def test_server_config_is_operator_mode_with_the_four_accounts_preloaded() -> None:
    trust = Trust.generate()
    text = render_server_config(trust, revocations={public_key(new_keypair(Role.USER)): 1})
    assert "resolver: MEMORY" in text
    assert f"system_account: {trust.system_account_key}" in text
    preload = text.split("resolver_preload: {")[1]
    app = decode_jwt(preload.split(f"{trust.account_key}: ")[1].split()[0])
    devices = decode_jwt(preload.split(f"{trust.devices_account_key}: ")[1].split()[0])
    assert app["iss"] == devices["iss"] == public_key(trust.operator_signing)
    assert app["nats"]["limits"]["disk_storage"] == -1  # JetStream enabled
    assert "disk_storage" not in devices["nats"]["limits"]  # devices reach it through imports only
    assert "revocations" not in app["nats"]
    assert len(devices["nats"]["revocations"]) == 1
    operators = decode_jwt(preload.split(f"{trust.operators_account_key}: ")[1].split()[0])
    assert operators["iss"] == app["iss"]
    assert "disk_storage" not in operators["nats"]["limits"]


def test_devices_import_from_the_app_account_only_what_the_app_account_exports_to_them() -> None:
    trust = Trust.generate()
    app = decode_jwt(trust.account_jwt())["nats"]
    devices = decode_jwt(trust.devices_account_jwt())["nats"]
    exported = {(e["subject"], e["type"]) for e in app["exports"]}
    imported = {(i["subject"], i["type"]) for i in devices["imports"]}
    assert imported == {*((s, "service") for s in TO_APP_SERVICES), *((s, "stream") for s in TO_DEVICE_STREAMS)}
    assert imported <= exported  # the rest of the exports are the operators' (test_operator_roles.py)
    assert all(i["account"] == trust.account_key for i in devices["imports"])
    # Requests devices send cross as services: the server replaces their reply subject.
    assert ("$JS.API.DIRECT.GET.KV_sdv_desired.>", "service") in imported
    assert ("sdv.evt.agent.>", "service") in imported
    assert ("$KV.sdv_desired.>", "stream") in imported
    # Nothing that would let a device reach the JetStream API beyond direct gets, or commands.
    assert not [s for s, _ in imported if s.startswith(("$JS.API.STREAM", "$JS.API.CONSUMER", "sdv.cmd"))]
    assert [(e["subject"], e["type"]) for e in devices["exports"]] == [
        ("sdv.device.*.ops.>", "service"), ("sdv.logs.>", "stream")]  # to operators (roles.py)
    assert [(i["subject"], i["account"]) for i in app["imports"]] == [
        ("sdv.device.*.ops.>", trust.devices_account_key)]


def test_the_registry_trust_file_holds_only_signing_keys_and_refuses_the_full_trust(tmp_path: Path) -> None:
    trust = Trust.generate()
    path = trust.authority().save(tmp_path / "registry-trust.json")
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    for name in ("operator", "account", "account_signing", "system_account", "service_user", "enrol_user"):
        assert bytes(getattr(trust, name).seed).decode() not in text, name
    authority = DeviceAuthority.load(path)
    device = public_key(new_keypair(Role.USER))
    assert decode_jwt(authority.device_jwt(device, "d", device_permissions("d")))["iss"] == \
        public_key(trust.devices_signing)
    reissued = decode_jwt(authority.devices_account_jwt({device: 5}))
    assert reissued["nats"]["imports"] == decode_jwt(trust.devices_account_jwt())["nats"]["imports"]
    assert reissued["nats"]["revocations"] == {device: 5}
    with pytest.raises(NotAnAuthorityFile, match="full chain of trust"):
        DeviceAuthority.load(trust.save(tmp_path / "trust.json"))


def test_a_trust_file_from_before_the_devices_account_gains_it_and_a_new_app_signing_key(
    tmp_path: Path,
) -> None:
    trust = Trust.generate()
    path = trust.save(tmp_path / "trust.json")
    old = json.loads(path.read_text())
    del old["devices_account"], old["devices_signing"]
    path.write_text(json.dumps(old))
    upgraded = Trust.load_or_create(path)
    assert upgraded.account_key == trust.account_key  # JetStream data stays the account's
    assert public_key(upgraded.operator) == public_key(trust.operator)
    assert public_key(upgraded.account_signing) != public_key(trust.account_signing)  # old device JWTs void
    assert Trust.load(path).devices_account_key == upgraded.devices_account_key
