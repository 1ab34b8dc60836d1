"""Console capture of native apps: each app writes stdout/stderr to append-only files in its run
directory; the agent follows them from a persisted offset.

Files rather than pipes so that an app outlives an agent restart: a pipe would break (SIGPIPE)
when the agent exits, a file does not, and the new agent resumes reading where the old one
stopped (the offset is saved with the lines, in one transaction). Only complete lines advance the
offset; a partial line is re-read after a restart.

The agent is woken by inotify when a file grows (after a 5 ms pause that lets a burst of lines
travel as one batch), with a slow safety re-read every second; where inotify is unavailable it
polls: 10 ms right after output, backing off to 50 ms when quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from sdv_edge_agent.adapters.inotify import Inotify
from sdv_edge_agent.ports import LinesSink

STREAMS = ("stdout", "stderr")
MAX_LINE = 64 * 1024
READ_CHUNK = 1 << 20
FAST_POLL_S = 0.01
SLOW_POLL_S = 0.05
BATCH_S = 0.005
SAFETY_READ_S = 1.0


def console_path(run_dir: Path, stream: str) -> Path:
    return run_dir / f"{stream}.log"


class FileFollower:
    def __init__(self, run_dir: Path, offsets: dict[str, int], sink: LinesSink) -> None:
        self.paths = {s: console_path(run_dir, s) for s in STREAMS}
        self.offsets = {s: offsets.get(s, 0) for s in STREAMS}
        self.sink = sink
        self._fds: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()

    def _fd(self, stream: str) -> int | None:
        fd = self._fds.get(stream)
        if fd is None:
            try:
                fd = self._fds[stream] = os.open(self.paths[stream], os.O_RDONLY)
            except FileNotFoundError:
                return None
        return fd

    def read_once(self, *, final: bool = False) -> bool:
        """Deliver every complete line written since the last read; True if there was any."""
        rows: list[tuple[str, float, str]] = []
        for stream in STREAMS:
            fd = self._fd(stream)
            if fd is None:
                continue
            offset = self.offsets[stream]
            data = os.pread(fd, READ_CHUNK, offset)
            if not data:
                continue
            now = time.time()
            end = data.rfind(b"\n") + 1
            if end == 0 and (final or len(data) >= MAX_LINE):
                end = len(data)  # an over-long line, or the last words of a process that ended
            for raw in data[:end].splitlines():
                rows.append((stream, now, raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r")))
            self.offsets[stream] = offset + end
        if rows:
            self.sink(rows, dict(self.offsets))
        return bool(rows)

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
                got = self.read_once()
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
                got = self.read_once()
            delay = FAST_POLL_S if got else min(SLOW_POLL_S, delay * 1.5)
            await asyncio.sleep(delay)

    async def finish(self) -> None:
        """Read what is left (the process has ended), then stop following."""
        self._stopping.set()
        async with self._lock:
            while self.read_once():
                pass
            self.read_once(final=True)
        self._close()

    def _close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
