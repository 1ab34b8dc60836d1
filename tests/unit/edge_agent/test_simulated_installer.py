"""The SIMULATED installer: the real verification, shared by digest, and no venv. Real signed
packages built by the packager's code; no servers."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import msgspec
import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdv_edge_agent.adapters.packages import InstallError
from sdv_edge_agent.adapters.simulated_installer import SimulatedInstaller, VerifiedArtifacts
from sdv_events.schemas.packages import PackageInfo
from sdv_packager.application import package_info
from sdv_packager.build.pipeline import build_package
from sdv_packager.build.wheels import WheelSource
from sdv_packager.domain.vss import VssCatalog
from sdv_packager.signing import Signer

MANIFEST = '[app]\nname = "speed"\nversion = "1.0.0"\nentry_point = "main.py"\n'


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def built(signer: Signer, tmp_path_factory: pytest.TempPathFactory) -> tuple[PackageInfo, bytes]:
    app = tmp_path_factory.mktemp("app")
    (app / "sdv-app.toml").write_text(MANIFEST)
    (app / "main.py").write_text("print('speed')\n")
    catalog = VssCatalog.from_json((resources.files("sdv_packager") / "data" / "vss_catalog.json").read_bytes())
    package = build_package(app, catalog, WheelSource(no_index=True))
    return package_info(package, signer), package.artifact


def installers(tmp_path: Path, key: str, count: int) -> tuple[VerifiedArtifacts, list[SimulatedInstaller]]:
    verified = VerifiedArtifacts()
    return verified, [SimulatedInstaller(tmp_path / f"sim-{i}" / "apps", key, verified) for i in range(count)]


async def test_one_full_check_per_artifact_for_many_devices_and_no_venv(
    built: tuple[PackageInfo, bytes], signer: Signer, tmp_path: Path
) -> None:
    info, artifact = built
    verified, devices = installers(tmp_path, signer.public_key_b64, 20)
    children = psutil.Process().children(recursive=True)
    for installer in devices:
        done = await installer.install(info, artifact)
        assert installer.installed(info) == done
        # No files, no venv: the marker, and the signed manifest every start checks again.
        assert sorted(p.name for p in done.root.iterdir()) == [".installed", ".signed"]
    assert (verified.full_checks, verified.reused) == (1, 19)
    assert psutil.Process().children(recursive=True) == children  # no pip, no python -m venv


async def test_tampered_bytes_are_refused_even_after_the_digest_verified_for_others(
    built: tuple[PackageInfo, bytes], signer: Signer, tmp_path: Path
) -> None:
    info, artifact = built
    verified, (good, victim) = installers(tmp_path, signer.public_key_b64, 2)
    await good.install(info, artifact)
    tampered = bytearray(artifact)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(InstallError, match="sha256") as err:
        await victim.install(info, bytes(tampered))
    assert err.value.stage == "verify"
    assert victim.installed(info) is None
    assert not (tmp_path / "sim-1" / "apps").exists()
    assert (verified.full_checks, verified.reused) == (1, 0)  # the tampered bytes were checked in full


async def test_a_forged_signature_is_checked_in_full_and_refused(
    built: tuple[PackageInfo, bytes], signer: Signer, tmp_path: Path
) -> None:
    info, artifact = built
    verified, (good, victim) = installers(tmp_path, signer.public_key_b64, 2)
    await good.install(info, artifact)
    forger = Signer(Ed25519PrivateKey.generate())
    forged = msgspec.structs.replace(info, signature=forger.sign(info.manifest_digest), key_id=forger.key_id)
    with pytest.raises(InstallError, match="signature") as err:
        await victim.install(forged, artifact)
    assert err.value.stage == "verify"
    assert verified.full_checks == 1  # the forged one failed: nothing new remembered
    # A device that trusts another packager key does not reuse this process's verdict either.
    stranger = SimulatedInstaller(tmp_path / "stranger" / "apps", forger.public_key_b64, verified)
    with pytest.raises(InstallError, match="signature"):
        await stranger.install(info, artifact)
