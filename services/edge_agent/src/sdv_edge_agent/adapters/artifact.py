"""Verifying a downloaded artifact without letting it inflate first (the decompression bomb).

An artifact is a tar.gz whose first member is `package.json`, the manifest the packager signed
(`sdv_events.package_format`). The checks run in an order that never inflates more than it must:

1. the sha256 of the *compressed* bytes equals the digest the desired document names — nothing
   is decompressed before that;
2. the archive is read as one stream (gzip decompressed piece by piece, never more than the tar
   reader asks for), and every byte it inflates is counted: past `max_unpacked` bytes the
   artifact is refused, wherever in the archive that happens (headers and skipped data count);
3. the first member must be `package.json`, at most `MAX_MANIFEST_BYTES`: its Ed25519 signature is
   checked before any other member is inflated — an unsigned archive costs at most that much;
4. every later member must be listed in the signed manifest, its declared size must fit what is
   left of the budget (checked from its header, before its content is read), and its sha256 must
   match; no member twice, none missing.

Memory use is the members' content (what is then installed) plus a 64 KiB read buffer.
"""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
import zlib
from collections.abc import Sequence

import msgspec
from cryptography.exceptions import InvalidSignature

from sdv_events.package_format import (
    MANIFEST_MEMBER,
    PackageManifest,
    PackageVerificationError,
    key_id,
    public_key_from_b64,
    safe_member_path,
    sha256_hex,
)

MAX_MANIFEST_BYTES = 1 << 20
DEFAULT_MAX_UNPACKED = 256 << 20
CHUNK = 64 << 10


class UnpackedTooLarge(PackageVerificationError):
    """The archive inflates past the agent's limit: refused before it is inflated further."""


class _Counted(io.RawIOBase):
    """The inflated stream, counted: reading past `cap` bytes raises instead of inflating on."""

    def __init__(self, inner: gzip.GzipFile, cap: int) -> None:
        self.inner = inner
        self.cap = cap
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), CHUNK, self.cap + 1 - self.total)
        if want <= 0:
            raise UnpackedTooLarge(f"the artifact inflates past {self.cap // (1 << 20)} MiB")
        data = self.inner.read(want)
        self.total += len(data)
        if self.total > self.cap:
            raise UnpackedTooLarge(f"the artifact inflates past {self.cap // (1 << 20)} MiB")
        buffer[: len(data)] = data
        return len(data)


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    extracted = tar.extractfile(info)
    if extracted is None:
        raise PackageVerificationError(f"member {info.name!r} is not a regular file")
    parts = []
    while chunk := extracted.read(CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _check_signature(raw_manifest: bytes, signature_b64: str, public_keys: Sequence[str]) -> PackageManifest:
    """Signed by one of `public_keys` (the packager's; two during a rotation)."""
    if not public_keys:
        raise PackageVerificationError("this agent trusts no packager key yet")
    problems = []
    signed = sha256_hex(raw_manifest).encode()
    for key in public_keys:
        try:
            public_key_from_b64(key).verify(base64.b64decode(signature_b64), signed)
            break
        except (InvalidSignature, ValueError) as exc:
            problems.append(str(exc) or "invalid")
    else:
        trusted = ", ".join(key_id_of(k) for k in public_keys)
        raise PackageVerificationError(f"signature does not verify with the packager key(s) this agent "
                                       f"trusts ({trusted}): {'; '.join(sorted(set(problems)))}")
    try:
        return msgspec.json.decode(raw_manifest, type=PackageManifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PackageVerificationError(f"{MANIFEST_MEMBER} is invalid: {exc}") from None


def _member_info(info: tarfile.TarInfo) -> bool:
    """Whether the member holds content (False: a directory entry). Refuses the unsafe kinds."""
    if not safe_member_path(info.name):
        raise PackageVerificationError(f"unsafe member path {info.name!r}")
    if info.isdir():
        return False
    if not info.isfile():
        raise PackageVerificationError(f"member {info.name!r} is not a regular file")
    return True


def verify_bounded(
    artifact: bytes, *, digest: str, signature_b64: str, public_keys: Sequence[str],
    max_unpacked: int = DEFAULT_MAX_UNPACKED,
) -> tuple[PackageManifest, bytes, dict[str, bytes]]:
    """(signed manifest, its raw bytes, member path → content), or `PackageVerificationError`."""
    actual = sha256_hex(artifact)
    if actual != digest:
        raise PackageVerificationError(f"artifact sha256 {actual} does not match {digest}")
    stream = _Counted(gzip.GzipFile(fileobj=io.BytesIO(artifact), mode="rb"), max_unpacked)
    manifest: PackageManifest | None = None
    raw_manifest = b""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream, CHUNK), mode="r|") as tar:
            for info in tar:
                if not _member_info(info):
                    continue
                if manifest is None:
                    if info.name != MANIFEST_MEMBER:
                        raise PackageVerificationError(f"the first member is {info.name!r}, not "
                                                       f"{MANIFEST_MEMBER}")
                    if info.size > MAX_MANIFEST_BYTES:
                        raise PackageVerificationError(f"{MANIFEST_MEMBER} is {info.size} bytes "
                                                       f"(at most {MAX_MANIFEST_BYTES})")
                    raw_manifest = _read_member(tar, info)
                    manifest = _check_signature(raw_manifest, signature_b64, public_keys)
                    continue
                expected = manifest.files.get(info.name)
                if expected is None or info.name in members:
                    raise PackageVerificationError(f"member {info.name!r} is not in the signed manifest "
                                                   "(or appears twice)")
                if info.size > max_unpacked - stream.total:
                    raise UnpackedTooLarge(f"member {info.name!r} declares {info.size} bytes: the "
                                           f"artifact would inflate past {max_unpacked // (1 << 20)} MiB")
                content = _read_member(tar, info)
                if sha256_hex(content) != expected:
                    raise PackageVerificationError(f"{info.name}: sha256 does not match the manifest")
                members[info.name] = content
    except PackageVerificationError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise PackageVerificationError(f"artifact is not a readable tar.gz: {exc}") from None
    if manifest is None:
        raise PackageVerificationError(f"artifact has no {MANIFEST_MEMBER}")
    missing = sorted(set(manifest.files) - set(members))
    if missing:
        raise PackageVerificationError(f"members differ from the manifest: missing {missing}")
    return manifest, raw_manifest, members


def check_recorded(raw_manifest: bytes, signature_b64: str, public_keys: Sequence[str]) -> PackageManifest:
    """A manifest kept beside an installed version, checked again (signature and decoding)."""
    return _check_signature(raw_manifest, signature_b64, public_keys)


def key_id_of(public_key_b64: str) -> str:
    try:
        return key_id(base64.b64decode(public_key_b64))
    except ValueError:
        return "?"
