"""The package artifact format: the contract between the packager (writes) and agents (verify).

An artifact is a reproducible `tar.gz` whose first member is `package.json`, the canonical
package manifest: app metadata plus the sha256 of every other member. The packager signs the
sha256 of `package.json` with Ed25519; the signature travels beside the artifact (in the
`PackagePublished` event and the desired state), so the artifact's bytes do not depend on the
key. Verifying = artifact digest matches, manifest digest matches the signature, every member's
sha256 matches the manifest, and no member is missing or extra.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import PurePosixPath
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sdv_events.errors import SdvError

MANIFEST_MEMBER = "package.json"
FORMAT_VERSION = 1


class WheelTarget(msgspec.Struct, frozen=True, kw_only=True):
    """The wheels (under `wheels/`) that install the app on one python/platform: the agent
    installs exactly these, with no resolution of its own."""

    python: str  # "3.11"
    platform: str  # the wheel platform tag resolved for, e.g. "manylinux2014_aarch64"
    arch: str  # "aarch64", "x86_64", … or "any" when every wheel is pure
    wheels: list[str] = []


def platform_key(python: str, arch: str) -> str:
    """`3.11/aarch64`: how a package names a platform it carries (`PackageInfo.platforms`)."""
    return f"{python}/{arch}"


class PackageManifest(msgspec.Struct, frozen=True, kw_only=True):
    format: int = FORMAT_VERSION
    name: str
    version: str
    description: str = ""
    entry_point: str
    python_version: str
    runtime: str
    channel: str
    hot_swap: bool = False
    dependencies: list[str] = []
    vss_reads: list[str] = []
    vss_writes: list[str] = []
    resources: dict[str, float] = {}
    health: dict[str, Any] = {}
    security: dict[str, str] = {}
    wheels: list[str] = []
    targets: list[WheelTarget] = []
    resolved: list[str] = []  # name==version of every bundled distribution
    vss_version: str = ""
    mqtt: bool = False
    # Folders of the app (relative) that go on the app's PYTHONPATH, e.g. a Velocitas app's
    # generated `vehicle` model (gen/vehicle_model) and its app/src.
    python_path: list[str] = []
    files: dict[str, str] = {}  # member path → sha256 hex


class PackageVerificationError(SdvError):
    """The artifact is not what was signed: it must not be installed."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_manifest(manifest: PackageManifest) -> bytes:
    return msgspec.json.encode(msgspec.to_builtins(manifest), order="sorted")


def key_id(public_key_raw: bytes) -> str:
    return sha256_hex(public_key_raw)[:16]


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text))


def safe_member_path(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and name == str(path)


def read_artifact(artifact: bytes) -> tuple[PackageManifest, bytes, dict[str, bytes]]:
    """(manifest, manifest bytes, member path → content) of an artifact, refusing unsafe members."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(artifact), mode="r:gz") as tar:
            for info in tar:
                if not safe_member_path(info.name):
                    raise PackageVerificationError(f"unsafe member path {info.name!r}")
                if info.isdir():
                    continue
                if not info.isfile():
                    raise PackageVerificationError(f"member {info.name!r} is not a regular file")
                extracted = tar.extractfile(info)
                assert extracted is not None
                members[info.name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PackageVerificationError(f"artifact is not a readable tar.gz: {exc}") from None
    raw_manifest = members.pop(MANIFEST_MEMBER, None)
    if raw_manifest is None:
        raise PackageVerificationError(f"artifact has no {MANIFEST_MEMBER}")
    try:
        manifest = msgspec.json.decode(raw_manifest, type=PackageManifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PackageVerificationError(f"{MANIFEST_MEMBER} is invalid: {exc}") from None
    return manifest, raw_manifest, members


def verify_artifact(
    artifact: bytes, *, digest: str, signature_b64: str, public_key_b64: str
) -> tuple[PackageManifest, dict[str, bytes]]:
    """Check everything, or raise `PackageVerificationError` saying what does not match."""
    actual = sha256_hex(artifact)
    if actual != digest:
        raise PackageVerificationError(f"artifact sha256 {actual} does not match {digest}")
    manifest, raw_manifest, members = read_artifact(artifact)
    try:
        public_key_from_b64(public_key_b64).verify(
            base64.b64decode(signature_b64), sha256_hex(raw_manifest).encode()
        )
    except (InvalidSignature, ValueError) as exc:
        raise PackageVerificationError(f"signature does not verify: {exc or 'invalid'}") from None
    listed = set(manifest.files)
    present = set(members)
    if listed != present:
        raise PackageVerificationError(
            f"members differ from the manifest: missing {sorted(listed - present)}, "
            f"unlisted {sorted(present - listed)}"
        )
    for path, content in members.items():
        if sha256_hex(content) != manifest.files[path]:
            raise PackageVerificationError(f"{path}: sha256 does not match the manifest")
    return manifest, members
