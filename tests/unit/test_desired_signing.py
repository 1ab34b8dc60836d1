"""Signed desired-state documents (sdv_events.desired_signing), without any server: what the
orchestrator signs verifies with its key only, for its device only, and any change to any field
breaks the signature."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdv_events.desired_signing import DesiredSigner, DesiredVerifier, UntrustedDesired, parse_public_key
from sdv_events.key_files import load_or_create_ed25519, write_public_key
from sdv_events.schemas.deployment import DesiredApp, DesiredState, SignedDesired
from sdv_events.schemas.packages import PackageInfo

ORCHESTRATOR = DesiredSigner(Ed25519PrivateKey.generate())
VERIFIER = DesiredVerifier(ORCHESTRATOR.public_key_b64)


def package(version: str) -> PackageInfo:
    return PackageInfo(name="probe", version=version, digest=version[0] * 64, size=1, object_name="o",
                       manifest_digest="m", signature="s", key_id="k", channel="stable",
                       runtime="native", entry_point="main.py", python_version="3.11")


def document(revision: int = 5, device_id: str = "car-1", *, rollback: bool = False) -> DesiredState:
    app = DesiredApp(package=package("2.0.0"), config={"MODE": "eco"}, rollout_id="r-1", rollback=rollback)
    return DesiredState(device_id=device_id, revision=revision, apps={"probe": app})


def refused(raw: bytes, *, device_id: str = "car-1", accepted: int = 0) -> UntrustedDesired:
    with pytest.raises(UntrustedDesired) as caught:
        VERIFIER.accept(raw, device_id=device_id, accepted_revision=accepted)
    return caught.value


def resigned_fields(raw: bytes, change: dict[str, object]) -> bytes:
    """The signed value with the document's JSON edited and the signature kept (a forger's try)."""
    outer = msgspec.json.decode(raw)
    outer["document"] |= change
    return msgspec.json.encode(outer)


def test_a_signed_document_verifies_and_carries_every_field() -> None:
    doc = document(rollback=True)
    assert VERIFIER.accept(ORCHESTRATOR.sign(doc), device_id="car-1", accepted_revision=4) == doc


def test_the_same_revision_again_is_nothing_to_do_and_an_older_one_is_a_replay() -> None:
    raw = ORCHESTRATOR.sign(document(revision=5))
    assert VERIFIER.accept(raw, device_id="car-1", accepted_revision=5) is None
    replay = refused(raw, accepted=6)
    assert (replay.cause, replay.revision) == ("replayed", 5)
    assert "older than revision 6" in str(replay)


def test_an_unsigned_document_is_refused() -> None:
    plain = msgspec.json.encode(document())
    assert refused(plain).cause == "unsigned"
    assert refused(b"not json at all").cause == "unsigned"
    assert refused(b"[" * 100_000).cause == "unsigned"
    assert refused(msgspec.json.encode({"document": {}, "key_id": VERIFIER.key_id})).cause == "unsigned"


def test_a_document_signed_by_another_key_is_refused() -> None:
    other = DesiredSigner(Ed25519PrivateKey.generate())
    assert refused(other.sign(document())).cause == "unknown_key"
    # Claiming the pinned key's id does not help: the signature is still the other key's.
    outer = msgspec.json.decode(other.sign(document()))
    outer["key_id"] = VERIFIER.key_id
    assert refused(msgspec.json.encode(outer)).cause == "bad_signature"


@pytest.mark.parametrize("change", [
    {"revision": 6}, {"device_id": "car-2"}, {"apps": {}},
    {"apps": {"probe": {**msgspec.to_builtins(document().apps["probe"]), "rollback": True}}},
    {"apps": {"probe": {**msgspec.to_builtins(document().apps["probe"]), "config": {"MODE": "x"}}}},
    {"apps": {"probe": {**msgspec.to_builtins(document().apps["probe"]),
                        "package": msgspec.to_builtins(package("1.0.0"))}}},
], ids=["revision", "device", "apps", "rollback", "config", "package"])
def test_changing_any_signed_field_breaks_the_signature(change: dict[str, object]) -> None:
    assert refused(resigned_fields(ORCHESTRATOR.sign(document()), change)).cause == "bad_signature"


def test_whitespace_or_a_garbled_signature_is_a_bad_signature() -> None:
    raw = ORCHESTRATOR.sign(document())
    assert refused(raw.replace(b'"revision":5', b'"revision": 5')).cause == "bad_signature"
    outer = msgspec.json.decode(raw)
    outer["signature"] = "%%%"
    assert refused(msgspec.json.encode(outer)).cause == "bad_signature"


def test_a_document_for_another_device_is_refused() -> None:
    wrong = refused(ORCHESTRATOR.sign(document(device_id="car-2")))
    assert (wrong.cause, wrong.revision) == ("other_device", 5)
    assert "car-2" in str(wrong)


def test_the_wire_value_is_readable_json_with_the_signed_bytes_inside() -> None:
    raw = ORCHESTRATOR.sign(document())
    signed = msgspec.json.decode(raw, type=SignedDesired)
    assert msgspec.json.decode(bytes(signed.document), type=DesiredState) == document()
    assert signed.key_id == ORCHESTRATOR.key_id == VERIFIER.key_id
    assert msgspec.json.decode(raw)["document"]["apps"]["probe"]["rollback"] is False


def test_public_keys_are_checked_when_parsed() -> None:
    assert parse_public_key(ORCHESTRATOR.public_key_b64 + "\n") is not None
    with pytest.raises(ValueError, match="32 bytes"):
        parse_public_key(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64"):
        parse_public_key("not*base64")


def test_a_key_file_is_created_owner_only_once_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "orchestrator-ed25519.pem"
    first = DesiredSigner(load_or_create_ed25519(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert DesiredSigner(load_or_create_ed25519(path)).public_key_b64 == first.public_key_b64
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    pub = path.with_suffix(".pub")
    write_public_key(pub, first.public_key_b64)
    assert pub.read_text().strip() == first.public_key_b64
    os.chmod(path, 0o640)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_ed25519(path)
