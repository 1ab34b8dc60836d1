"""An uploaded app tarball → directory, bounded by what it *unpacks* to, not what it weighs.

The archive is decompressed as a stream through a counter and extracted member by member, so a
small upload that inflates (a decompression bomb) is refused as soon as the declared sizes or the
decompressed bytes pass the limit — before they are written — not after everything is on disk.
Absolute, parent, link and device members are refused as before.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from pathlib import Path

from sdv_events.bus import InvalidRequest
from sdv_events.package_format import safe_member_path
from sdv_packager.build.sources import MAX_APP_BYTES

MAX_MEMBERS = 20_000
# Tar headers, pax records and padding on top of the files' contents.
MAX_STREAM_BYTES = MAX_APP_BYTES + 16 * 1024 * 1024
_MB = 1024 * 1024


class UploadRefused(InvalidRequest):
    """The upload is not an app archive the packager will unpack (a typed `invalid_request`)."""


class _Bounded(io.RawIOBase):
    """Reads of a decompressing stream that stop with `UploadRefused` past `limit` bytes."""

    def __init__(self, inner: io.BufferedIOBase, limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(min(len(buffer), self.limit + 1 - self.count))
        self.count += len(data)
        if self.count > self.limit:
            raise UploadRefused(f"upload unpacks to more than {self.limit // _MB} MB")
        buffer[: len(data)] = data
        return len(data)


def _decompressed(data: bytes) -> io.BufferedIOBase:
    raw = io.BytesIO(data)
    if data[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if data[:3] == b"BZh":
        return bz2.BZ2File(raw)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)
    return raw


def unpack_upload(data: bytes, dest: Path, *, max_bytes: int = MAX_APP_BYTES,
                  max_stream_bytes: int = MAX_STREAM_BYTES) -> Path:
    """Extract into `dest`; returns the app directory (the root, or its one top folder)."""
    stream = io.BufferedReader(_Bounded(_decompressed(data), max_stream_bytes), 1024 * 1024)
    total = members = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                members += 1
                if members > MAX_MEMBERS:
                    raise UploadRefused(f"upload has more than {MAX_MEMBERS} members")
                if not safe_member_path(member.name.removeprefix("./") or "."):
                    raise UploadRefused(f"upload member {member.name!r} escapes the app directory")
                if not (member.isfile() or member.isdir()):
                    raise UploadRefused(f"upload member {member.name!r} is not a file or directory")
                total += member.size if member.isfile() else 0
                if total > max_bytes:
                    raise UploadRefused(
                        f"upload unpacks to more than {max_bytes // _MB} MB "
                        f"(at member {member.name!r}); the app sources are limited to that"
                    )
                tar.extract(member, dest, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise UploadRefused(f"upload is not a tar archive: {exc}") from None
    except OSError as exc:
        if exc.errno is not None:  # the disk, not the archive
            raise
        raise UploadRefused(f"upload is not a tar archive: {exc}") from None
    entries = list(dest.iterdir())
    # Accept both "files at the root" and "one top folder".
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
