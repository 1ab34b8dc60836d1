"""Artifact downloads from the `sdv_packages` object store, resumable chunk by chunk.

A vehicle's link drops in tunnels and car parks; a 50 MB package must not start over each time.
The object store keeps an artifact as chunk messages on `$O.sdv_packages.C.<nuid>` in the stream
`OBJ_sdv_packages`. The agent appends each chunk to `<downloads>/<digest>.part` and records, in
`<digest>.json` (written atomically, every MiB and whenever an attempt ends), the last chunk's
stream sequence and the bytes it vouches for. After
a broken link, a timeout or an agent restart, the next attempt truncates the file to what the
record vouches for and asks for the chunks after that sequence only.

Everything is read with JetStream *direct gets* (the object's metadata by its subject, each chunk
as the next message on the object's chunk subject after a sequence): a device creates no
consumer and needs no stream info, so its permissions grant neither (a consumer's deliver
subject would be the device's choice, FACTS.md).

The complete file is checked against the object's SHA-256 before anyone sees it (the installer
then verifies the signature and every member); a mismatch discards the partial so the next
attempt starts clean. Waiting is per chunk (`idle_timeout_s`), not for the whole artifact: a slow
link that keeps delivering is never cut off.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import ObjectInfo
from nats.js.errors import NotFoundError, ObjectNotFoundError

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_edge_agent.adapters.link import NatsLink
from sdv_edge_agent.adapters.packages import InstallError
from sdv_events.provisioning import PACKAGES_BUCKET
from sdv_events.schemas.packages import PackageInfo

log = structlog.get_logger("sdv.agent.download")
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
RECORD_EVERY_BYTES = 1 << 20
OBJECT_STREAM = f"OBJ_{PACKAGES_BUCKET}"
DIRECT_GET = f"$JS.API.DIRECT.GET.{OBJECT_STREAM}"
Progress = Callable[[int, int], None]  # (bytes so far, total)


@dataclass
class PartialDownload:
    """What is on disk of one artifact, and the last chunk's stream sequence it came from."""

    part: Path
    record: Path
    nuid: str
    size: int = 0
    last_seq: int = 0
    _recorded: int = 0
    _file: BinaryIO | None = None

    @classmethod
    def open(cls, directory: Path, digest: str, nuid: str) -> PartialDownload:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = digest.replace(":", "-")
        found = cls(directory / f"{name}.part", directory / f"{name}.json", nuid)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            saved = json.loads(found.record.read_text())
            if saved["nuid"] == nuid and found.part.stat().st_size >= int(saved["size"]):
                found.size, found.last_seq = int(saved["size"]), int(saved["last_seq"])
        with found.part.open("ab") as f:  # bytes past the record were never vouched for
            f.truncate(found.size)
        if found.size == 0:
            found.last_seq = 0
        found._recorded = found.size
        return found

    def append(self, data: bytes, seq: int) -> None:
        if self._file is None:
            self._file = self.part.open("ab")
        self._file.write(data)
        self.size += len(data)
        self.last_seq = seq
        if self.size - self._recorded >= RECORD_EVERY_BYTES:
            self.save()

    def save(self) -> None:
        """Vouch for what is written so far (a crash loses at most `RECORD_EVERY_BYTES`)."""
        if self._file is not None:
            self._file.flush()
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"nuid": self.nuid, "size": self.size, "last_seq": self.last_seq}))
        os.replace(tmp, self.record)
        self._recorded = self.size

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self) -> bytes:
        self.close()
        return self.part.read_bytes()

    def discard(self) -> None:
        self.close()
        for path in (self.part, self.record):
            path.unlink(missing_ok=True)


def object_sha256(digest: str | None) -> bytes | None:
    """The object store's `SHA-256=<base64url>` digest as bytes."""
    if not digest or "=" not in digest:
        return None
    algorithm, _, encoded = digest.partition("=")
    if algorithm.upper() != "SHA-256":
        return None
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def _read_checked(partial: PartialDownload, total: int, expected: bytes | None) -> tuple[bytes, bool]:
    data = partial.read()
    intact = len(data) == total and (expected is None or hashlib.sha256(data).digest() == expected)
    return data, intact


class Downloader:
    """Reads artifacts from the object store once the link is up, resuming partial downloads."""

    def __init__(self, link: NatsLink, directory: Path, *, idle_timeout_s: float = 30.0,
                 connect_wait_s: float = 5.0, progress: Progress | None = None) -> None:
        self.link = link
        self.directory = directory
        self.idle_timeout_s = idle_timeout_s
        self.connect_wait_s = connect_wait_s
        self.progress = progress

    async def fetch(self, package: PackageInfo) -> bytes:
        name = package.object_name
        if package.size > MAX_ARTIFACT_BYTES:
            raise InstallError("download", f"artifact of {package.size} bytes exceeds the device limit")
        try:
            async with asyncio.timeout(self.connect_wait_s):
                await self.link.connected.wait()
        except TimeoutError:
            raise InstallError("download", "not connected to NATS", transient=True) from None
        try:
            info = await self._info(name)
        except ObjectNotFoundError:
            raise InstallError("download", f"{name}: not in {PACKAGES_BUCKET}") from None
        except Exception as exc:
            reraise_if_cancelling(exc)
            raise InstallError("download", f"{name}: {type(exc).__name__}: {exc}", transient=True) from None
        total = info.size or 0
        if total > MAX_ARTIFACT_BYTES:
            raise InstallError("download", f"artifact of {total} bytes exceeds the device limit")
        if not info.nuid or not total:
            raise InstallError("download", f"{name}: empty object")
        try:
            partial = PartialDownload.open(self.directory, package.digest, info.nuid)
        except OSError as exc:
            raise InstallError("download", f"cannot keep the download on disk: {exc}",
                               transient=True) from None
        resumed_from = partial.size
        started = time.monotonic()
        if partial.size < total:
            await self._receive(partial, total, name)
        try:  # reading and hashing up to 512 MiB: not on the loop
            data, intact = await asyncio.to_thread(_read_checked, partial, total, object_sha256(info.digest))
        except OSError as exc:
            partial.discard()
            raise InstallError("download", f"{name}: cannot read the download back: {exc}",
                               transient=True) from None
        partial.discard()
        if not intact:
            raise InstallError("download", f"{name}: the downloaded bytes do not match the object's "
                                           f"SHA-256; starting over", transient=True)
        log.info("downloaded", object=name, bytes=total, resumed_from=resumed_from,
                 seconds=round(time.monotonic() - started, 3))
        return data

    async def _info(self, name: str) -> ObjectInfo:
        """The object's metadata message, read by a direct get of its subject."""
        meta = f"$O.{PACKAGES_BUCKET}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
        try:
            raw = await self.link.js.get_last_msg(OBJECT_STREAM, meta, direct=True)
        except NotFoundError:
            raise ObjectNotFoundError from None
        try:
            info: ObjectInfo = ObjectInfo.from_response(json.loads(raw.data or b""))
        except (ValueError, TypeError, KeyError) as exc:
            raise InstallError("download", f"{name}: unreadable object metadata: {exc}") from None
        if info.deleted:
            raise ObjectNotFoundError
        return info

    async def _next_chunk(self, subject: str, after_seq: int) -> Msg:
        nc = self.link.nc
        if nc is None:
            raise InstallError("download", "not connected to NATS", transient=True)
        request = json.dumps({"seq": after_seq + 1, "next_by_subj": subject}).encode()
        return await nc.request(DIRECT_GET, request, timeout=self.idle_timeout_s)

    async def _receive(self, partial: PartialDownload, total: int, name: str) -> None:
        if partial.last_seq:
            log.info("download_resumed", object=name, have_bytes=partial.size, of_bytes=total)
        subject = f"$O.{PACKAGES_BUCKET}.C.{partial.nuid}"
        try:
            while partial.size < total:
                try:
                    msg = await self._next_chunk(subject, partial.last_seq)
                except nats.errors.TimeoutError:
                    raise InstallError("download", f"{name}: no data for {self.idle_timeout_s:.0f}s "
                                                   f"({partial.size} of {total} bytes kept; resumes)",
                                       transient=True) from None
                headers = msg.headers or {}
                seq = headers.get("Nats-Sequence")
                if headers.get("Nats-Subject") != subject or seq is None:
                    status = headers.get("Status", "?")
                    raise InstallError("download", f"{name}: chunks end at {partial.size} of {total} "
                                                   f"bytes (status {status})", transient=True)
                partial.append(msg.data, int(seq))
                if self.progress is not None:
                    self.progress(partial.size, total)
        except InstallError:
            raise
        except Exception as exc:
            reraise_if_cancelling(exc)
            raise InstallError("download", f"{name}: {type(exc).__name__}: {exc} ({partial.size} of "
                                           f"{total} bytes kept; resumes)", transient=True) from None
        finally:
            try:
                partial.save()  # also when cut off or cancelled: the next attempt resumes from here
            except OSError as exc:  # a full disk: this attempt's tail is not vouched for, that is all
                log.warning("download_progress_not_saved", object=name, error=str(exc))
            with contextlib.suppress(OSError):
                partial.close()

    def prune(self, max_age_s: float) -> int:
        """Partial downloads nobody resumed for `max_age_s` (a version no longer wanted)."""
        removed = 0
        if not self.directory.is_dir():
            return 0
        cutoff = time.time() - max_age_s
        for path in self.directory.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
