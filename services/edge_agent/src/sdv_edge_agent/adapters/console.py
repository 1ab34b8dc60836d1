"""Console capture of native apps: each app writes stdout/stderr to append-only files in its run
directory; the agent follows them from a persisted offset.

Files rather than pipes so that an app outlives an agent restart: a pipe would break (SIGPIPE)
when the agent exits, a file does not, and the new agent resumes reading where the old one
stopped (the offset is saved with the lines, in one transaction). Only complete lines advance the
offset; a partial line is re-read after a restart.

The agent is woken by inotify when a file grows (after a 5 ms pause that lets a burst of lines
travel as one batch), with a slow safety re-read every second; where inotify is unavailable it
polls: 10 ms right after output, backing off to 50 ms when quiet.

Rotation without losing a line: an app that prints for months must not fill the disk, yet the
app holds its file open (O_APPEND) and the agent can neither swap nor truncate it without a race
against the next write. Instead, once lines are safely in SQLite, the agent punches a hole over
what it has read (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the blocks go back to the filesystem, the
offsets stay valid, the app notices nothing. The file's size grows; its disk usage stays below
`KEEP_BYTES` plus what is unread. Where the filesystem cannot punch holes, files grow as before
and the agent logs it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from sdv_edge_agent.adapters.inotify import Inotify
from sdv_edge_agent.ports import LinesSink

STREAMS = ("stdout", "stderr")
MAX_LINE = 64 * 1024
READ_CHUNK = 1 << 20
FAST_POLL_S = 0.01
SLOW_POLL_S = 0.05
BATCH_S = 0.005
SAFETY_READ_S = 1.0
KEEP_BYTES = 1 << 20  # read bytes left in place before a hole is punched (and a page-aligned unit)
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
log = structlog.get_logger("sdv.agent.console")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_punch_unsupported: set[int] = set()  # st_dev of filesystems that refused


def punch_hole(fd: int, start: int, end: int) -> bool:
    """Give back the disk blocks of bytes [start, end) of the file; its size stays. False where
    the filesystem cannot."""
    dev = os.fstat(fd).st_dev
    if dev in _punch_unsupported:
        return False
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, end - start) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        _punch_unsupported.add(dev)
        log.warning("console_files_not_rotated", reason=os.strerror(code))
    return False


def console_path(run_dir: Path, stream: str) -> Path:
    return run_dir / f"{stream}.log"


class FileFollower:
    def __init__(self, run_dir: Path, offsets: dict[str, int], sink: LinesSink,
                 still_running: Callable[[], bool] = lambda: False) -> None:
        self.paths = {s: console_path(run_dir, s) for s in STREAMS}
        self.offsets = {s: offsets.get(s, 0) for s in STREAMS}
        self.punched = {s: 0 for s in STREAMS}
        self._last_failure_log = 0.0
        self.sink = sink
        self.still_running = still_running
        self._fds: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()

    def _fd(self, stream: str) -> int | None:
        fd = self._fds.get(stream)
        if fd is None:
            try:
                fd = self._fds[stream] = os.open(self.paths[stream], os.O_RDWR)  # RDWR: to punch holes
            except FileNotFoundError:
                return None
        return fd

    def read_once(self, *, final: bool = False) -> bool:
        """Deliver every complete line written since the last read; True if there was any."""
        rows: list[tuple[str, float, str]] = []
        offsets = dict(self.offsets)
        for stream in STREAMS:
            fd = self._fd(stream)
            if fd is None:
                continue
            offset = offsets[stream]
            data = os.pread(fd, READ_CHUNK, offset)
            if not data:
                continue
            now = time.time()
            end = data.rfind(b"\n") + 1
            if end == 0 and (final or len(data) >= MAX_LINE):
                end = len(data)  # an over-long line, or the last words of a process that ended
            for raw in data[:end].splitlines():
                rows.append((stream, now, raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r")))
            offsets[stream] = offset + end
        if rows:
            self.sink(rows, dict(offsets))  # raises: nothing advances, the lines are read again
            self.offsets = offsets  # committed with the lines: safe to free below
            self._free_read_blocks()
        return bool(rows)

    def _read_or_wait(self) -> bool:
        """`read_once`, but a failure to store the lines (disk full, database busy) is logged and
        retried later instead of ending the following for good."""
        try:
            return self.read_once()
        except Exception as exc:
            now = time.monotonic()
            if now - self._last_failure_log > 30:
                log.warning("console_store_failed", error=repr(exc))
                self._last_failure_log = now
            return False

    def _free_read_blocks(self) -> None:
        for stream, fd in self._fds.items():
            upto = (self.offsets[stream] - KEEP_BYTES) // KEEP_BYTES * KEEP_BYTES
            if upto > self.punched[stream] and punch_hole(fd, self.punched[stream], upto):
                self.punched[stream] = upto

    async def run(self) -> None:
        notify = Inotify.open([p for p in self.paths.values() if p.exists()])
        try:
            if notify is None:
                await self._poll()
            else:
                await self._on_notify(notify)
        finally:
            if notify is not None:
                asyncio.get_running_loop().remove_reader(notify.fd)
                notify.close()
            self._close()

    async def _on_notify(self, notify: Inotify) -> None:
        changed = asyncio.Event()

        def on_event() -> None:
            notify.drain()
            changed.set()

        asyncio.get_running_loop().add_reader(notify.fd, on_event)
        while not self._stopping.is_set():
            changed.clear()
            async with self._lock:
                got = self._read_or_wait()
            if got:
                await asyncio.sleep(BATCH_S)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SAFETY_READ_S):
                    await changed.wait()
            if changed.is_set():
                await asyncio.sleep(BATCH_S)

    async def _poll(self) -> None:
        delay = FAST_POLL_S
        while not self._stopping.is_set():
            async with self._lock:
                got = self._read_or_wait()
            delay = FAST_POLL_S if got else min(SLOW_POLL_S, delay * 1.5)
            await asyncio.sleep(delay)

    async def finish(self) -> None:
        """Read what is left, then stop following. An unterminated last line is delivered only if
        the process has ended (its last words); from a process that runs on (the agent is
        stopping), it stays for the next agent run to read whole."""
        self._stopping.set()
        async with self._lock:
            while self.read_once():
                pass
            if not self.still_running():
                self.read_once(final=True)
        self._close()

    def _close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
