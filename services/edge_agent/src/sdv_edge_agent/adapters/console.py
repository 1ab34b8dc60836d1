"""Console capture of native apps: each app writes stdout/stderr to append-only files in its run
directory; the agent follows them from a persisted offset.

Files rather than pipes so that an app outlives an agent restart: a pipe would break (SIGPIPE)
when the agent exits, a file does not, and the new agent resumes reading where the old one
stopped (the offset is saved with the lines, in one transaction). Only complete lines advance the
offset; a partial line is re-read after a restart. Polling adapts: 10 ms right after output,
backing off to 50 ms when quiet, which keeps console latency low and an idle agent cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from sdv_edge_agent.ports import LinesSink

STREAMS = ("stdout", "stderr")
MAX_LINE = 64 * 1024
READ_CHUNK = 1 << 20
FAST_POLL_S = 0.01
SLOW_POLL_S = 0.05


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
        delay = FAST_POLL_S
        try:
            while not self._stopping.is_set():
                async with self._lock:
                    got = self.read_once()
                delay = FAST_POLL_S if got else min(SLOW_POLL_S, delay * 1.5)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._close()

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
