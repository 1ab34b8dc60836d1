"""sdv_events.auth without a server: JWT encoding and verification, key checks, the device
permission set and the operator-mode server config."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdv_events.auth import (
    InvalidJwt,
    InvalidPublicKey,
    Role,
    Trust,
    check_public_key,
    decode_jwt,
    device_permissions,
    new_keypair,
    public_key,
    render_server_config,
)
from sdv_events.auth.jwt import jti_of


def test_user_jwt_is_signed_by_the_account_signing_key_and_names_the_account() -> None:
    trust = Trust.generate()
    device = public_key(new_keypair(Role.USER))
    claims = decode_jwt(trust.user_jwt(device, "orin-1", device_permissions("orin-1"),
                                       expires_at=2_000_000_000, issued_at=1_900_000_000))
    assert claims["iss"] == public_key(trust.account_signing)
    assert claims["nats"]["issuer_account"] == trust.account_key
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


def test_server_config_is_operator_mode_with_both_accounts_preloaded() -> None:
    trust = Trust.generate()
    text = render_server_config(trust, revocations={public_key(new_keypair(Role.USER)): 1})
    assert "resolver: MEMORY" in text
    assert f"system_account: {trust.system_account_key}" in text
    preload = text.split("resolver_preload: {")[1]
    account_jwt = preload.split(f"{trust.account_key}: ")[1].split()[0]
    account = decode_jwt(account_jwt)
    assert account["iss"] == public_key(trust.operator_signing)
    assert account["nats"]["limits"]["disk_storage"] == -1  # JetStream enabled
    assert len(account["nats"]["revocations"]) == 1
