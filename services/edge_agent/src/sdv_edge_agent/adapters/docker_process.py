"""One app container seen as a `ports.Process`: its init's host pid, its start time, its end.

Calls that block until something happens (the container's end, the stats stream) each get a
thread of their own rather than a slot of asyncio's default executor: that pool has only a few
threads, and a handful of long-running containers would starve everything else using it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

from sdv_edge_agent.adapters.docker_time import docker_time_ns
from sdv_edge_agent.ports import StdinUnavailable, Usage

if TYPE_CHECKING:
    import docker

log = structlog.get_logger("sdv.agent.docker")
OOM_REASON = "memory limit exceeded (OOM-killed)"


def exit_status(code: int | None) -> int | None:
    """Docker reports a process killed by signal N as 128+N (the shell's convention, which the
    container's init passes on): map it to -N like the native runtime. An app that exits with
    such a status on purpose is indistinguishable from it."""
    if code is not None and 128 < code < 128 + 65:
        with contextlib.suppress(ValueError):
            return -signal.Signals(code - 128).value
    return code


def started_at(state: dict[str, Any]) -> float:
    return docker_time_ns(state.get("StartedAt") or "") / 1e9


def memory_in_use(stats: dict[str, Any]) -> int:
    """What the container really holds: usage minus inactive page cache (as `docker stats`)."""
    memory = stats.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return max(0, int(memory.get("usage", 0)) - int(cache))


def cpu_percent(stats: dict[str, Any]) -> float:
    now, before = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    used = now.get("cpu_usage", {}).get("total_usage", 0) - before.get("cpu_usage", {}).get("total_usage", 0)
    system = now.get("system_cpu_usage", 0) - before.get("system_cpu_usage", 0)
    if used <= 0 or system <= 0 or not before.get("system_cpu_usage"):
        return 0.0
    return round(float(used / system * now.get("online_cpus", 1) * 100.0), 1)


class DockerProcess:
    def __init__(self, client: docker.DockerClient, container_id: str, name: str, pid: int,
                 started: float) -> None:
        self.client = client
        self.container_id = container_id
        self.name = name
        self.pid = pid
        self.started = started
        self.followed = False  # a console follower removes the container once it has read it all
        self.log = log.bind(container=name)
        self._exited: asyncio.Future[int | None] | None = None
        self._oom_killed = False
        self._stdin: socket.socket | None = None
        self._usage: Usage | None = None
        self._sampler: threading.Thread | None = None
        self._closed = False

    def _state(self) -> dict[str, Any] | None:
        import docker

        try:
            return dict(self.client.api.inspect_container(self.container_id)["State"])
        except docker.errors.NotFound:
            return None

    def alive(self) -> bool:
        if self._exited is not None and self._exited.done():
            return False
        try:
            state = self._state()
        except Exception:  # the engine does not answer: alive until the wait thread says otherwise
            return self._exited is not None
        return bool(state and state.get("Running") and state.get("Pid") == self.pid)

    def paused(self) -> bool:
        state = self._state()
        return bool(state and state.get("Paused"))

    async def wait(self) -> int | None:
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            threading.Thread(target=self._wait_thread, args=(loop, self._exited),
                             name=f"wait:{self.name}", daemon=True).start()
        return await asyncio.shield(self._exited)

    def _wait_thread(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[int | None]) -> None:
        """Blocks until the container ends. A lost engine connection is not an exit: the container
        may well run on (live restore, or the API restarted), so it waits for the engine to answer
        again (backing off) and reports an exit only once the container has really ended."""
        import docker

        code: int | None = None
        delay = 0.5
        while not done.done():
            try:
                code = exit_status(self.client.api.wait(self.container_id, timeout=None)["StatusCode"])
                state = self._state()
                self._oom_killed = bool(state and state.get("OOMKilled"))
                self._closed = True
                break
            except docker.errors.NotFound:
                self.log.warning("container_vanished")  # removed by someone else: status unknown
                break
            except Exception as exc:  # the engine went away (requests' errors): ask again later
                self.log.warning("container_wait_failed", error=repr(exc), retry_in_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

        def settle() -> None:
            if not done.done():
                done.set_result(code)

        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (the agent stopped)
            loop.call_soon_threadsafe(settle)

    def exit_reason(self) -> str | None:
        return OOM_REASON if self._oom_killed else None

    def write_stdin(self, data: bytes) -> None:
        """Through the engine's attach endpoint. Closing it does not close the app's stdin
        (StdinOnce is off), so, as with the native FIFO, the app never sees EOF."""
        import docker

        if not self.alive():
            raise StdinUnavailable(f"container {self.name} is not running")
        if self._stdin is None:
            try:
                attached = self.client.api.attach_socket(self.container_id, params={"stdin": 1, "stream": 1})
            except docker.errors.DockerException as exc:
                raise StdinUnavailable(f"cannot attach to the stdin of {self.name}: {exc}") from None
            self._stdin = getattr(attached, "_sock", attached)
            self._stdin.setblocking(False)
        try:
            sent = self._stdin.send(data)
        except BlockingIOError:
            raise StdinUnavailable("stdin buffer is full: the app is not reading its input") from None
        except OSError as exc:
            self._close_stdin()
            raise StdinUnavailable(f"stdin write failed: {exc.strerror or exc}") from None
        if sent < len(data):
            raise StdinUnavailable(f"stdin buffer is full: wrote {sent} of {len(data)} bytes")

    async def run_command(self, argv: list[str], timeout_s: float) -> tuple[int | None, str]:
        """An exec in the container, as its user, in /app. The engine cannot cancel an exec: one
        that outlives `timeout_s` is left to finish in a thread of its own."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int | None, str]] = loop.create_future()

        def run() -> None:
            result: tuple[int | None, str]
            try:
                exec_id = self.client.api.exec_create(self.container_id, argv, stdout=False, stderr=True,
                                                      workdir="/app")["Id"]
                err = self.client.api.exec_start(exec_id) or b""
                code = self.client.api.exec_inspect(exec_id).get("ExitCode")
                result = (code if code is not None else -1, err.decode(errors="replace").strip()[-200:])
            except Exception as exc:  # the container ended, the engine refused: a failed check
                result = (-1, f"docker exec: {exc}")

            def settle() -> None:
                if not done.done():
                    done.set_result(result)

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        threading.Thread(target=run, name=f"exec:{self.name}", daemon=True).start()
        try:
            async with asyncio.timeout(timeout_s):
                return await done
        except TimeoutError:
            return None, ""

    def usage(self) -> Usage | None:
        """The latest sample of the engine's stats stream (one a second), started on first use:
        a one-off stats request takes a second, too long for the agent's monitor loop."""
        if self._sampler is None and not self._closed:
            self._sampler = threading.Thread(target=self._sample, name=f"stats:{self.name}", daemon=True)
            self._sampler.start()
        return self._usage

    def _sample(self) -> None:
        """Samples arrive every second, so the thread notices `close()` within a second; once the
        container has ended they come empty (the engine keeps the stream open), which ends it too."""
        try:
            for stats in self.client.api.stats(self.container_id, stream=True, decode=True):
                if self._closed or not stats.get("memory_stats"):
                    break
                self._usage = Usage(cpu_pct=cpu_percent(stats), rss_bytes=memory_in_use(stats))
        except Exception as exc:
            if not self._closed:
                self.log.debug("stats_stream_ended", error=repr(exc))

    def _close_stdin(self) -> None:
        if self._stdin is not None:
            with contextlib.suppress(OSError):
                self._stdin.close()
            self._stdin = None

    def close(self) -> None:
        """Stop the helper threads' streams (the container itself is left as it is)."""
        self._closed = True
        self._close_stdin()
