"""The native runtime: each app is a process in its own session and process group.

- pause/resume: SIGSTOP/SIGCONT to the whole group; stop: SIGTERM (plus SIGCONT, so a paused
  app can handle it), then SIGKILL of the group after the timeout.
- console: stdout/stderr go to files in the run directory (see console.py); stdin is a named
  pipe the app holds open read-write, so it never sees EOF, even while the agent restarts.
- exit: watched through a pidfd, which works for processes this agent started and for those
  adopted from an earlier agent run alike; the exit status comes from the app's exit keeper
  (exit_keeper.py), also for an app that ended while no agent ran.
- limits: cgroup v2 or setrlimit (see limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
from pathlib import Path

import psutil
import structlog

from sdv_edge_agent.adapters import sandbox
from sdv_edge_agent.adapters.console import STREAMS, FileFollower, console_path
from sdv_edge_agent.adapters.exit_keeper import (
    keeper_command,
    open_status,
    read_report,
    read_status,
    send_launch,
    status_after_end,
)
from sdv_edge_agent.adapters.limits import Limits, child_setup
from sdv_edge_agent.ports import LinesSink, Process, RunSpec, StdinUnavailable, Usage
from sdv_events.schemas.packages import PackageInfo

log = structlog.get_logger("sdv.agent.native")
STDIN = "stdin.pipe"
# Apps are forked with a pre-exec hook (limits, sandbox). gRPC's fork handlers (on by default in
# grpcio 1.85's core) then run in the child too, and while a call is in flight — the databroker
# subscription of activation gates always is — the child can die of SIGSEGV before its exec (seen:
# 9 children in 20). The agent never uses gRPC in a child, so they are turned off; gRPC reads
# this when it starts, which is after this module is loaded (kuksa-client is imported lazily).
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"


class NativeProcess:
    def __init__(
        self, pid: int, started: float, run_dir: Path, keeper: subprocess.Popen[bytes] | None
    ) -> None:
        self.pid = pid
        self.started = started
        self.run_dir = run_dir
        self._keeper = keeper  # the app's exit keeper, when this agent run started it
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = None  # it ended already (and its keeper collected it)
        self._settling: asyncio.Task[None] | None = None
        self._ps: psutil.Process | None = None
        self._children: list[psutil.Process] = []
        self._samples = 0
        self._exited: asyncio.Future[int | None] | None = None
        self._stdin_fd: int | None = None

    def alive(self) -> bool:
        if self._exited is not None and self._exited.done():
            return False
        try:
            proc = psutil.Process(self.pid)
            return bool(proc.create_time() == self.started and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    async def wait(self) -> int | None:
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            pidfd = self._pidfd

            def on_exit() -> None:
                if pidfd is not None:
                    loop.remove_reader(pidfd)
                    with contextlib.suppress(OSError):
                        os.close(pidfd)
                self._settling = loop.create_task(self._settle())

            if pidfd is None:
                on_exit()
            else:
                loop.add_reader(pidfd, on_exit)
        return await asyncio.shield(self._exited)

    async def _settle(self) -> None:
        """Resolve `wait()` with the exit status the keeper recorded; if reading it fails, with
        None (status unknown) and a log line — never leave the supervisor waiting forever."""
        code: int | None = None
        try:
            code = await status_after_end(self.run_dir, self._keeper)
        except Exception as exc:
            log.warning("exit_status_unreadable", pid=self.pid, run_dir=str(self.run_dir),
                        error=f"{type(exc).__name__}: {exc}")
        finally:
            if self._exited is not None and not self._exited.done():
                self._exited.set_result(code)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def write_stdin(self, data: bytes) -> None:
        if self._stdin_fd is None:
            try:
                self._stdin_fd = os.open(self.run_dir / STDIN, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: nobody reads the pipe any more
                raise StdinUnavailable(f"stdin of pid {self.pid} is not open: {exc.strerror}") from None
        try:
            written = os.write(self._stdin_fd, data)
        except BlockingIOError:
            raise StdinUnavailable("stdin buffer is full: the app is not reading its input") from None
        except OSError as exc:
            raise StdinUnavailable(f"stdin write failed: {exc.strerror}") from None
        if written < len(data):
            raise StdinUnavailable(f"stdin buffer is full: wrote {written} of {len(data)} bytes")

    def exit_reason(self) -> str | None:
        return None  # limits here end a process by signals the exit status already tells

    def usage(self) -> Usage | None:
        """CPU % since the last call and RSS of the app's processes. The list of its children
        is refreshed every tenth call only: walking /proc for it costs more than the rest."""
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.pid)
                self._ps.cpu_percent(None)
            self._samples += 1
            if self._samples % 10 == 1:
                self._children = self._ps.children(recursive=True)
            rss = self._ps.memory_info().rss
            for child in self._children:
                with contextlib.suppress(psutil.Error):
                    rss += child.memory_info().rss
            return Usage(cpu_pct=self._ps.cpu_percent(None), rss_bytes=rss)
        except psutil.Error:
            return None

    def close(self) -> None:
        if self._stdin_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdin_fd)
            self._stdin_fd = None


class SetupFailed(OSError):
    """The child could not join its cgroup, set its limits or enter its sandbox: it never ran."""


def _native(process: Process) -> NativeProcess:
    if not isinstance(process, NativeProcess):
        raise TypeError(f"the native runtime cannot handle {type(process).__name__}")
    return process


def _ensure_fifo(path: Path) -> None:
    try:
        if stat.S_ISFIFO(path.stat().st_mode):
            return
        path.unlink()
    except FileNotFoundError:
        pass
    os.mkfifo(path, 0o600)


class NativeRuntime:
    name = "native"
    outlives_agent = True

    def __init__(self, limits: Limits | None = None) -> None:
        self._limits = limits or Limits.detect()
        self.limits = f"{self._limits.describe()}; {sandbox.describe()}"

    async def prepare(self, package: PackageInfo, app_dir: Path) -> None:
        """Nothing: the installer's venv is all a native app needs."""

    async def start(self, spec: RunSpec) -> NativeProcess:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        fifo = spec.run_dir / STDIN
        _ensure_fifo(fifo)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        out = {s: os.open(console_path(spec.run_dir, s), flags, 0o640) for s in STREAMS}
        stdin = os.open(fifo, os.O_RDWR)  # read-write: the app never sees EOF on its stdin
        status = open_status(spec.run_dir)
        launch_r, launch_w = os.pipe()
        report_r, report_w = os.pipe()
        cgroup = self._limits.prepare(spec.app, spec.memory_mb, spec.cpu)
        try:
            keeper = subprocess.Popen(  # noqa: ASYNC220 - fork+exec returns at once; its report is awaited
                keeper_command(spec.argv, launch_r, report_w, status), cwd=spec.cwd, env=spec.env,
                stdin=stdin, stdout=out["stdout"], stderr=out["stderr"], start_new_session=True,
                close_fds=True, pass_fds=(launch_r, report_w, status),
                preexec_fn=child_setup(cgroup, spec.memory_mb, spec.sandbox),
            )
        except BaseException as exc:
            for fd in (launch_w, report_r):
                os.close(fd)
            if isinstance(exc, subprocess.SubprocessError):  # raised in the child before exec
                raise SetupFailed(f"the app's limits or sandbox could not be set up ({spec.sandbox.level} "
                                  f"sandbox, uid {spec.sandbox.uid}): {exc}") from None
            raise
        finally:
            for fd in (stdin, status, launch_r, report_w, *out.values()):
                os.close(fd)
        with contextlib.suppress(BrokenPipeError):  # it ended first: its report says how
            send_launch(launch_w, spec.argv, spec.env)
        pid = await read_report(report_r, keeper)
        try:
            started = psutil.Process(pid).create_time()
        except psutil.Error:
            started = 0.0  # it already ended; wait() reports how
        return NativeProcess(pid, started, spec.run_dir, keeper)

    def adopt(self, spec: RunSpec, pid: int, started: float) -> NativeProcess | None:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() != started or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if os.getpgid(pid) != pid:
                return None
            return NativeProcess(pid, started, spec.run_dir, None)
        except (psutil.Error, ProcessLookupError, OSError):
            return None

    def pause(self, process: Process) -> None:
        _native(process).signal_group(signal.SIGSTOP)

    def resume(self, process: Process) -> None:
        _native(process).signal_group(signal.SIGCONT)

    async def stop(self, process: Process, timeout_s: float) -> int | None:
        process = _native(process)
        process.signal_group(signal.SIGTERM)
        process.signal_group(signal.SIGCONT)
        try:
            async with asyncio.timeout(timeout_s):
                code = await process.wait()
        except TimeoutError:
            log.warning("stop_timeout_kill", pid=process.pid, timeout_s=timeout_s)
            process.signal_group(signal.SIGKILL)
            code = await process.wait()
        process.signal_group(signal.SIGKILL)  # what the app left behind in its group
        process.close()
        return code

    def kill(self, process: Process) -> None:
        process = _native(process)
        process.signal_group(signal.SIGCONT)
        process.signal_group(signal.SIGKILL)

    def kill_orphan(self, pid: int, started: float) -> bool:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() != started or os.getpgid(pid) != pid:
                return False
        except (psutil.Error, OSError):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        return True

    def last_exit(self, spec: RunSpec) -> int | None:
        return read_status(spec.run_dir)

    def usage(self, process: Process) -> Usage | None:
        return _native(process).usage()

    def follow_output(
        self, spec: RunSpec, process: Process | None, offsets: dict[str, int], sink: LinesSink
    ) -> FileFollower:
        return FileFollower(spec.run_dir, offsets, sink,
                            still_running=process.alive if process is not None else lambda: False)

    def release(self, app: str) -> None:
        self._limits.release(app)

    def prune(self, app: str, keep: list[PackageInfo]) -> None:
        """Nothing: the installer removes old versions' files; the cgroup is per app."""

