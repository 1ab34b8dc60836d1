"""Console capture of app containers: the engine's log (json-file driver, rotated by it) followed
through the logs API, one stream per request so stdout and stderr stay apart.

Each log message carries the engine's nanosecond timestamp; a stream's read position is the
timestamp of the last message delivered and how many messages carried exactly that timestamp
(offsets `stdout` and `stdout.n`). It is saved with the lines (one transaction, as for native
apps), so an agent that restarts asks the engine for the log `since` that time and skips what it
already delivered: no line lost, none repeated. (A wall clock stepped backwards while the agent
was away can hide lines from that resume; the engine stamps messages with the wall clock.)

Followers run in threads (the SDK blocks) and hand messages to the event loop, which delivers
them in batches. `finish` drops the followers and reads the rest of the log up to now, so
nothing a stopped container printed last is missed; a container that has ended is then removed
(its exit status and OOM flag were read when it ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from sdv_edge_agent.adapters.docker_time import docker_time_ns
from sdv_edge_agent.ports import LinesSink

if TYPE_CHECKING:
    import docker

SINK_RETRY_S = 1.0
log = structlog.get_logger("sdv.agent.docker")
STREAMS = ("stdout", "stderr")
MAX_LINE = 64 * 1024
BATCH_S = 0.005
JOIN_S = 5.0


@dataclass
class StreamCursor:
    """Turns one stream's log messages into lines, skipping those at or before `committed`.

    Messages are lines, except that the engine splits lines over 16 KiB into several messages,
    only the last ending in a newline: those are joined, and the position only moves past them
    once the line is complete (a restart re-reads the whole line)."""

    stream: str
    committed: tuple[int, int] = (0, 0)  # (timestamp ns, messages with that timestamp)
    seen: tuple[int, int] = (0, 0)
    partial: bytearray = field(default_factory=bytearray)
    partial_ts: int = 0

    def feed(self, message: bytes, rows: list[tuple[str, float, str]]) -> None:
        stamp, _, payload = message.partition(b" ")
        ts = docker_time_ns(stamp.decode("ascii", "replace"))
        self.seen = (ts, self.seen[1] + 1) if ts == self.seen[0] else (ts, 1)
        if self.seen <= self.committed:
            return  # delivered before (a resumed or repeated read)
        if not self.partial:
            self.partial_ts = ts
        self.partial += payload
        if payload.endswith(b"\n") or len(self.partial) >= MAX_LINE:
            self._emit(rows)

    def flush(self, rows: list[tuple[str, float, str]]) -> None:
        """The last words of an ended container, with no newline at the end."""
        if self.partial:
            self._emit(rows)

    def _emit(self, rows: list[tuple[str, float, str]]) -> None:
        text = bytes(self.partial[:MAX_LINE]).decode("utf-8", "replace").rstrip("\n").rstrip("\r")
        rows.append((self.stream, self.partial_ts / 1e9, text))
        self.partial.clear()
        self.committed = self.seen

    def since(self) -> float | None:
        """The engine's `since` for a read that resumes here (µs, rounded down: it may repeat
        messages, which `feed` skips, but never miss one)."""
        return (self.committed[0] // 1000) / 1e6 if self.committed[0] else None

    def restart(self) -> None:
        """Before a new read from `since()`: forget what a read that was cut off had seen."""
        self.seen = (0, 0)
        self.partial.clear()


class ContainerFollower:
    def __init__(self, client: docker.DockerClient, container_id: str | None, offsets: dict[str, int],
                 sink: LinesSink, *, remove_when_ended: bool = True) -> None:
        self.client = client
        self.container_id = container_id
        self.sink = sink
        self.remove_when_ended = remove_when_ended
        self.cursors = {s: StreamCursor(s, committed=(offsets.get(s, 0), offsets.get(f"{s}.n", 0)))
                        for s in STREAMS}
        self._rows: list[tuple[str, float, str]] = []
        self._lock = threading.Lock()
        self._responses: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def offsets(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for stream, cursor in self.cursors.items():
            out[stream], out[f"{stream}.n"] = cursor.committed
        return out

    # --- following (threads) -------------------------------------------------------------------

    def _follow(self, stream: str) -> None:
        cursor = self.cursors[stream]
        try:
            response = self.client.api.logs(
                self.container_id, stdout=stream == "stdout", stderr=stream == "stderr",
                stream=True, follow=True, timestamps=True, since=cursor.since(),
            )
            self._responses[stream] = response
            for message in response:
                with self._lock:
                    if self._stopping:
                        break
                    before = len(self._rows)
                    cursor.feed(message, self._rows)
                    grew = len(self._rows) > before
                if grew:
                    self._poke()
        except Exception as exc:
            if not self._stopping:
                log.debug("log_follow_ended", container=self.container_id, stream=stream, error=repr(exc))
        finally:
            self._poke()

    def _poke(self) -> None:
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the agent is exiting
                self._loop.call_soon_threadsafe(self._wake.set)

    def _deliver(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
            offsets = self.offsets()
        if rows:
            rows.sort(key=lambda row: row[1])  # both streams, in the order they were printed
            try:
                self.sink(rows, offsets)
            except Exception:
                with self._lock:  # not stored (disk full, database busy): delivered next time
                    self._rows = rows + self._rows
                raise

    async def run(self) -> None:
        if self.container_id is None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        for stream in STREAMS:
            thread = threading.Thread(target=self._follow, args=(stream,), daemon=True,
                                      name=f"logs:{self.container_id[:12]}:{stream}")
            self._threads.append(thread)
            thread.start()
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                await asyncio.sleep(BATCH_S)  # let a burst of lines travel as one batch
                try:
                    self._deliver()
                except Exception as exc:
                    log.warning("console_store_failed", container=self.container_id, error=repr(exc))
                    await asyncio.sleep(SINK_RETRY_S)
                    self._wake.set()
                    continue
                if not any(t.is_alive() for t in self._threads):
                    return  # the container ended: `finish` reads what is left
        finally:
            self._close_streams()

    def _close_streams(self) -> None:
        self._stopping = True
        for response in list(self._responses.values()):
            with contextlib.suppress(Exception):
                response.close()

    # --- the end -------------------------------------------------------------------------------

    async def finish(self) -> None:
        """Stop following, deliver everything the container printed up to now, and remove the
        container if it has ended."""
        self._close_streams()
        threads, self._threads = self._threads, []
        for thread in threads:  # they end at once: their streams were just closed
            await asyncio.to_thread(thread.join, JOIN_S)
        self._deliver()
        if self.container_id is None:
            return
        ended = await asyncio.to_thread(self._read_rest)
        self._deliver()
        if ended and self.remove_when_ended:
            await asyncio.to_thread(self._remove)

    def _read_rest(self) -> bool:
        """One plain (not following) read per stream from the committed position; True if the
        container is no longer running."""
        import docker

        try:
            state = self.client.api.inspect_container(self.container_id)["State"]
        except docker.errors.NotFound:
            return False
        except Exception as exc:  # the engine is unreachable (requests' errors are not DockerException)
            log.warning("container_inspect_failed", container=self.container_id, error=repr(exc))
            return False
        ended = not state.get("Running")
        for stream, cursor in self.cursors.items():
            with self._lock:
                cursor.restart()
            try:
                for message in self.client.api.logs(
                    self.container_id, stdout=stream == "stdout", stderr=stream == "stderr",
                    stream=True, follow=False, timestamps=True, since=cursor.since(),
                ):
                    with self._lock:
                        cursor.feed(message, self._rows)
                if ended:
                    with self._lock:
                        cursor.flush(self._rows)
            except Exception as exc:  # DockerException, or the engine's connection refused/reset
                log.warning("log_read_failed", container=self.container_id, stream=stream, error=str(exc))
        return bool(ended)

    def _remove(self) -> None:
        import docker

        with contextlib.suppress(docker.errors.NotFound):
            try:
                self.client.api.remove_container(self.container_id, force=True)
            except Exception as exc:  # APIError, or the engine unreachable
                log.warning("container_remove_failed", container=self.container_id, error=str(exc))
