"""Validation rules, reproducible artifacts, signatures and tamper detection (no servers)."""

from __future__ import annotations

import base64
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from sdv_events.package_format import PackageVerificationError, read_artifact, verify_artifact
from sdv_packager.build.errors import AppInvalid
from sdv_packager.build.pipeline import build_package, validate_app
from sdv_packager.build.wheels import WheelSource
from sdv_packager.domain.vss import VssCatalog
from sdv_packager.signing import Signer

OFFLINE = WheelSource(no_index=True)


def problems_of(app: Path, catalog: VssCatalog) -> dict[str, str]:
    with pytest.raises(AppInvalid) as caught:
        validate_app(app, catalog)
    return {p.where: p.message for p in caught.value.problems}


def test_same_input_gives_byte_identical_artifacts_in_two_dirs(
    app_dir: Path, tmp_path: Path, catalog: VssCatalog
) -> None:
    copy = tmp_path / "elsewhere" / "door-watch"
    shutil.copytree(app_dir, copy)
    (copy / "main.py").touch()  # another mtime must not matter
    first = build_package(app_dir, catalog, OFFLINE)
    second = build_package(copy, catalog, OFFLINE)
    assert first.artifact == second.artifact
    assert first.digest == second.digest


def test_artifact_lists_every_file_with_its_sha256(app_dir: Path, catalog: VssCatalog) -> None:
    built = build_package(app_dir, catalog, OFFLINE)
    manifest, _, members = read_artifact(built.artifact)
    assert set(manifest.files) == set(members) == {
        "sdv-app.toml", "main.py", "lib/__init__.py", "lib/rules.py", "vehicle_signals.py"
    }
    with tarfile.open(fileobj=io.BytesIO(built.artifact)) as tar:
        infos = tar.getmembers()
    assert infos[0].name == "package.json"
    assert {(i.uid, i.gid, i.mtime) for i in infos} == {(0, 0, 315_532_800)}


def test_generated_signal_module_is_typed_and_compiles(app_dir: Path, catalog: VssCatalog) -> None:
    _, _, members = read_artifact(build_package(app_dir, catalog, OFFLINE).artifact)
    source = members["vehicle_signals.py"].decode()
    compile(source, "vehicle_signals.py", "exec")
    assert "self.speed: Signal[float] = Signal(client, 'Vehicle.Speed', 'float', 'km/h', 'sensor', False)" in source
    assert "'Vehicle.Cabin.Door.Row1.DriverSide.IsLocked', 'boolean', None, 'actuator', True" in source


def sign(built, signer: Signer) -> dict[str, str]:
    return {"digest": built.digest, "signature_b64": signer.sign(built.manifest_digest),
            "public_key_b64": signer.public_key_b64}


def test_signature_verifies_and_any_flipped_byte_fails(
    app_dir: Path, catalog: VssCatalog, tmp_path: Path
) -> None:
    built = build_package(app_dir, catalog, OFFLINE)
    signer = Signer.load_or_create(tmp_path / "keys" / "packager.pem")
    args = sign(built, signer)
    manifest, _ = verify_artifact(built.artifact, **args)
    assert manifest.name == "door-watch"
    for offset in (0, len(built.artifact) // 2, len(built.artifact) - 1):
        tampered = bytearray(built.artifact)
        tampered[offset] ^= 0x01
        with pytest.raises(PackageVerificationError):
            verify_artifact(bytes(tampered), **args)


def test_tampered_member_or_manifest_fails_even_with_a_matching_digest(
    app_dir: Path, catalog: VssCatalog, tmp_path: Path
) -> None:
    """An attacker who rebuilds the tar (so the outer digest is 'right') is still caught."""
    from sdv_events.package_format import sha256_hex
    from sdv_packager.build.artifact import build_tar_gz

    built = build_package(app_dir, catalog, OFFLINE)
    signer = Signer.load_or_create(tmp_path / "k.pem")
    good_sig = signer.sign(built.manifest_digest)
    _manifest, raw_manifest, members = read_artifact(built.artifact)
    evil = build_tar_gz({"package.json": raw_manifest, **members, "main.py": b"import os; os.system('x')\n"})
    with pytest.raises(PackageVerificationError, match=r"main\.py: sha256"):
        verify_artifact(evil, digest=sha256_hex(evil), signature_b64=good_sig,
                        public_key_b64=signer.public_key_b64)
    evil_manifest = raw_manifest.replace(b'"door-watch"', b'"door-wotch"')
    evil2 = build_tar_gz({"package.json": evil_manifest, **members})
    with pytest.raises(PackageVerificationError, match="signature"):
        verify_artifact(evil2, digest=sha256_hex(evil2), signature_b64=good_sig,
                        public_key_b64=signer.public_key_b64)


def test_signature_from_another_key_fails(app_dir: Path, catalog: VssCatalog, tmp_path: Path) -> None:
    built = build_package(app_dir, catalog, OFFLINE)
    mine, theirs = Signer.load_or_create(tmp_path / "a.pem"), Signer.load_or_create(tmp_path / "b.pem")
    with pytest.raises(PackageVerificationError, match="signature"):
        verify_artifact(built.artifact, digest=built.digest, signature_b64=theirs.sign(built.manifest_digest),
                        public_key_b64=mine.public_key_b64)
    assert base64.b64decode(mine.public_key_b64) != base64.b64decode(theirs.public_key_b64)


def test_signing_key_is_created_owner_only_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "packager.pem"
    first = Signer.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Signer.load_or_create(path).public_key_b64 == first.public_key_b64
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        Signer.load_or_create(path)


def test_syntax_error_is_reported_with_file_and_line(app_dir: Path, catalog: VssCatalog) -> None:
    (app_dir / "lib" / "rules.py").write_text("def ok():\n    return 1\n\ndef broken(:\n")
    assert "syntax error" in problems_of(app_dir, catalog)["lib/rules.py:4"]


def test_missing_entry_point(app_dir: Path, catalog: VssCatalog) -> None:
    (app_dir / "main.py").unlink()
    assert "main.py does not exist" in problems_of(app_dir, catalog)["sdv-app.toml: app.entry_point"]


def test_unknown_signal_gets_a_suggestion_and_sensor_writes_are_refused(
    app_dir: Path, catalog: VssCatalog
) -> None:
    text = (app_dir / "sdv-app.toml").read_text()
    text = text.replace('reads = ["Vehicle.Speed"]', 'reads = ["Vehicle.Sped"]')
    text = text.replace('writes = ["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"]', 'writes = ["Vehicle.Speed"]')
    (app_dir / "sdv-app.toml").write_text(text)
    found = problems_of(app_dir, catalog)
    assert "did you mean Vehicle.Speed?" in found["vss.reads"]
    assert "is a sensor; apps may only write actuators" in found["vss.writes"]


def test_missing_manifest_and_bad_manifest_fields(app_dir: Path, catalog: VssCatalog) -> None:
    text = (app_dir / "sdv-app.toml").read_text()
    (app_dir / "sdv-app.toml").write_text(text.replace('memory = "256MB"', 'memory = "100MB"'))
    assert "at least 128 MB" in problems_of(app_dir, catalog)["sdv-app.toml: resources.memory"]
    (app_dir / "sdv-app.toml").unlink()
    # Named by the file, never by the directory it was unpacked into (a temporary one).
    assert problems_of(app_dir, catalog) == {"sdv-app.toml": "missing: the app folder has no manifest (nor an Eclipse Velocitas app/AppManifest.json)"}


def test_full_vss_export_tree_is_accepted() -> None:
    tree = {"Vehicle": {"type": "branch", "children": {
        "Speed": {"type": "sensor", "datatype": "float", "unit": "km/h"},
        "Body": {"type": "branch", "children": {"Horn": {"type": "branch", "children": {
            "IsActive": {"type": "actuator", "datatype": "boolean"}}}}}}}}
    import json

    catalog = VssCatalog.from_json(json.dumps(tree))
    assert catalog.get("Vehicle.Body.Horn.IsActive").kind == "actuator"
    assert catalog.check_usage(["Vehicle.Speed"], ["Vehicle.Body.Horn.IsActive"]) == []


def test_docker_mode_gets_a_non_root_dockerfile_with_its_own_venv(app_dir: Path, catalog: VssCatalog) -> None:
    text = (app_dir / "sdv-app.toml").read_text().replace('entry_point = "main.py"', 'entry_point = "main.py"\nruntime = "docker"')
    (app_dir / "sdv-app.toml").write_text(text)
    _, _, members = read_artifact(build_package(app_dir, catalog, OFFLINE).artifact)
    dockerfile = members["Dockerfile"].decode()
    lines = dockerfile.splitlines()
    assert "ARG BASE_IMAGE=python:3.11-slim" in lines
    assert "FROM ${BASE_IMAGE}" in lines
    # Debian's python has no `python` name and refuses system-wide pip (PEP 668): a venv of its own.
    assert "RUN python3 -m venv --without-pip /opt/venv \\" in lines  # no bundled wheels: no pip needed
    assert "pip install" not in dockerfile
    assert "USER 10001:10001" in lines
    assert lines[-1] == 'CMD ["/opt/venv/bin/python", "-u", "/app/main.py"]'


def test_docker_mode_with_wheels_installs_them_offline_into_the_venv(app_dir: Path) -> None:
    from sdv_packager.build.dockerfile import render_dockerfile
    from sdv_packager.domain.manifest import parse_manifest

    manifest = parse_manifest((app_dir / "sdv-app.toml").read_text())
    dockerfile = render_dockerfile(manifest, ["attrs==26.1.0", "six==1.17.0"])
    assert "RUN python3 -m venv /opt/venv \\\n" in dockerfile
    # By pin, not by file: the package may carry several platforms' wheels and pip picks the device's.
    assert " && /opt/venv/bin/python -m pip install --no-index --find-links /app/wheels attrs==26.1.0 six==1.17.0" in dockerfile
    assert dockerfile == render_dockerfile(manifest, ["attrs==26.1.0", "six==1.17.0"])  # reproducible text
