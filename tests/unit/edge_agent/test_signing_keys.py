"""Which signing keys an agent trusts when it learns them from its credentials
(`sdv_events.auth.suite_keys`, `sdv_edge_agent.adapters.signing_keys`): only a JWT the devices
signing key of its enrolment credentials signed, for this device, not older than the last one;
keys given to the agent override; during a rotation both keys count. No servers."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdv_edge_agent.adapters.packages import Installer, InstallError
from sdv_edge_agent.adapters.signing_keys import TrustedKeys
from sdv_events.auth import Role, Trust, device_permissions, new_keypair, public_key
from sdv_events.auth.creds import jwt_of_creds
from sdv_events.auth.suite_keys import CLAIM, CredentialsPin, SuiteKeys, UntrustedCredentials
from sdv_events.desired_signing import DesiredSigner
from sdv_events.schemas.packages import PackageInfo
from sdv_packager.application import package_info
from sdv_packager.build.pipeline import build_package
from sdv_packager.build.wheels import WheelSource
from sdv_packager.domain.vss import VssCatalog
from sdv_packager.signing import Signer

TRUST = Trust.generate()
DEVICE = new_keypair(Role.USER)
PACKAGER = Signer(Ed25519PrivateKey.generate())
ORCHESTRATOR = DesiredSigner(Ed25519PrivateKey.generate())
KEYS = SuiteKeys((PACKAGER.public_key_b64,), (ORCHESTRATOR.public_key_b64,))
PIN = CredentialsPin.of_enrolment(jwt_of_creds(TRUST.enrol_creds()))


def device_jwt(keys: SuiteKeys | None = KEYS, *, trust: Trust = TRUST, device: str | None = None,
               issued_at: int | None = None) -> str:
    return trust.authority().device_jwt(device or public_key(DEVICE), "car-1", device_permissions("car-1"),
                                        expires_at=int(time.time()) + 3600, issued_at=issued_at,
                                        signing_keys=keys)


def test_the_keys_of_a_jwt_issued_by_the_registry_are_learned() -> None:
    learned = PIN.keys_of(device_jwt(), device_key=public_key(DEVICE))
    assert learned is not None
    assert learned.keys == KEYS


def test_keys_in_a_jwt_signed_by_another_authority_are_refused() -> None:
    attacker = Trust.generate()  # an attacker's own chain of trust, listing the attacker's keys
    with pytest.raises(UntrustedCredentials, match="not by the devices signing key"):
        PIN.keys_of(device_jwt(trust=attacker), device_key=public_key(DEVICE))


def test_a_changed_claim_breaks_the_signature() -> None:
    header, _, signature = device_jwt().split(".")
    other = device_jwt(SuiteKeys((Signer(Ed25519PrivateKey.generate()).public_key_b64,), KEYS.orchestrator))
    forged = ".".join([header, other.split(".")[1], signature])
    with pytest.raises(UntrustedCredentials, match="does not verify"):
        PIN.keys_of(forged, device_key=public_key(DEVICE))


def test_another_devices_jwt_is_refused() -> None:
    other = public_key(new_keypair(Role.USER))
    with pytest.raises(UntrustedCredentials, match="another key"):
        PIN.keys_of(device_jwt(device=other), device_key=public_key(DEVICE))


def test_an_old_jwt_played_back_does_not_bring_back_a_rotated_out_key() -> None:
    keys = TrustedKeys(pin=PIN)
    old = device_jwt(KEYS, issued_at=1000)  # lists the key the rotation took out
    rotated = SuiteKeys((Signer(Ed25519PrivateKey.generate()).public_key_b64,), KEYS.orchestrator)
    assert keys.learn(device_jwt(rotated, issued_at=2000), device_key=public_key(DEVICE))
    assert not keys.learn(old, device_key=public_key(DEVICE))
    assert keys.packager == rotated.packager


def test_a_malformed_key_in_the_claim_is_refused() -> None:
    jwt = TRUST.authority().device_jwt(public_key(DEVICE), "car-1", device_permissions("car-1"))
    assert PIN.keys_of(jwt, device_key=public_key(DEVICE)) is None  # no claim at all: nothing learned
    bad = SuiteKeys(("not a key",), KEYS.orchestrator)
    with pytest.raises(UntrustedCredentials, match="not an Ed25519 public key"):
        PIN.keys_of(device_jwt(bad), device_key=public_key(DEVICE))
    assert CLAIM in bad.claims()


def test_keys_given_to_the_agent_override_what_credentials_say() -> None:
    mine = Signer(Ed25519PrivateKey.generate()).public_key_b64
    keys = TrustedKeys(packager=(mine,), pin=PIN)
    changes: list[int] = []
    keys.on_change(lambda: changes.append(1))
    assert keys.learn(device_jwt(), device_key=public_key(DEVICE))  # the orchestrator key is new
    assert keys.packager == (mine,)
    assert keys.orchestrator == KEYS.orchestrator
    assert changes == [1]


def test_without_enrolment_credentials_nothing_is_learned() -> None:
    keys = TrustedKeys()
    assert not keys.learn(device_jwt(), device_key=public_key(DEVICE))
    assert keys.packager == keys.orchestrator == ()


NEW_PACKAGER = Signer(Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def signed_by(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[PackageInfo, bytes]]:
    """One package signed with the old packager key, one with the new."""
    catalog = VssCatalog.from_json((resources.files("sdv_packager") / "data" / "vss_catalog.json").read_bytes())
    built = {}
    for name, signer in (("old", PACKAGER), ("new", NEW_PACKAGER)):
        app = tmp_path_factory.mktemp(name)
        (app / "sdv-app.toml").write_text(f'[app]\nname = "speed"\nversion = "1.0.{len(built)}"\n'
                                          'entry_point = "main.py"\n')
        (app / "main.py").write_text("print('speed')\n")
        package = build_package(app, catalog, WheelSource(no_index=True))
        built[name] = (package_info(package, signer), package.artifact)
    return built


def test_during_a_rotation_packages_signed_by_either_key_verify(
    signed_by: dict[str, tuple[PackageInfo, bytes]], tmp_path: Path
) -> None:
    installer = Installer(tmp_path, [PACKAGER.public_key_b64, NEW_PACKAGER.public_key_b64])
    for info, artifact in signed_by.values():
        installer.verify(info, artifact)
    installer.trust([NEW_PACKAGER.public_key_b64])  # the rotation ended: the old key is out
    with pytest.raises(InstallError, match="signature does not verify"):
        installer.verify(*signed_by["old"])
    installer.trust([])
    with pytest.raises(InstallError, match="trusts no packager key yet"):
        installer.verify(*signed_by["new"])
