"""The exit keeper: a small process between the agent and each native app, so that an app's exit
status is known even when the app ends while no agent runs.

Only a process's parent learns how it ended, and an app outlives the agent that started it (an
agent restart, update or crash leaves it running). So the native runtime starts a keeper, which
starts the app in a session of its own (the app's pid is still its process group), reports the
app's pid, waits for it and writes its exit status to a file the runtime opened for it
(`exit.status` in the run directory) — what `conmon` does for podman's containers. The agent, or
the next agent run, reads the status there once the app has ended.

The keeper is the app's own interpreter in isolated mode (`-I -S`: no site, no environment
variables) running `KEEPER`, stdlib only. The app's argv and environment come through a pipe
(marshal format 4, which every Python 3 reads), so the keeper's command line names no app. It is
started inside the app's limits and sandbox (the runtime's pre-exec hook runs in it), which the
app inherits.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import os
import subprocess
from pathlib import Path

STATUS_FILE = "exit.status"
REPORT_TIMEOUT_S = 15.0  # the keeper's interpreter start on a loaded machine, with margin
STATUS_WAIT_S = 1.0  # from the app's end until its keeper has written the status

# argv: <argv fd> <report fd> <status fd>. The report is the app's pid, or "E<errno>" when the
# app could not be executed; the status is the app's exit code (negative: killed by that signal).
KEEPER = """\
import _signal, marshal, os, sys  # _signal: `signal` would import enum, slower to start
argv_fd, report_fd, status_fd = (int(a) for a in sys.argv[1:4])
data = b""
while chunk := os.read(argv_fd, 65536):
    data += chunk
os.close(argv_fd)
argv, env = marshal.loads(data)
# The keeper outlives a SIGTERM meant for everything (a service manager's stop): it ends when
# the app has ended and its status is written. The app gets every default back.
for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
    _signal.signal(sig, _signal.SIG_IGN)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.close(r)
        os.close(report_fd)
        os.close(status_fd)
        os.setsid()
        for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGPIPE, _signal.SIGXFSZ):
            _signal.signal(sig, _signal.SIG_DFL)  # SIGPIPE, SIGXFSZ: Python ignores them
        os.execve(argv[0], argv, env)
    except OSError as exc:
        os.write(w, b"%d" % (exc.errno or 0))
    os._exit(127)
os.close(w)
failed = os.read(r, 32)
os.close(r)
os.write(report_fd, b"E" + failed if failed else b"%d" % pid)
os.close(report_fd)
_, status = os.waitpid(pid, 0)
os.write(status_fd, b"%d" % os.waitstatus_to_exitcode(status))
"""


class KeeperFailed(OSError):
    """The exit keeper did not start the app (it could not run, or ended first)."""


def keeper_command(app_argv: list[str], argv_fd: int, report_fd: int, status_fd: int) -> list[str]:
    # The app's interpreter itself, not its venv's entry (which a sandboxed user can run too).
    python = os.path.realpath(app_argv[0])
    return [python, "-I", "-S", "-c", KEEPER, str(argv_fd), str(report_fd), str(status_fd)]


def open_status(run_dir: Path) -> int:
    """The status file of the run about to start, emptied: a file descriptor for the keeper."""
    return os.open(run_dir / STATUS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def read_status(run_dir: Path) -> int | None:
    """The exit status the keeper wrote for the last run in `run_dir` (None: not written)."""
    try:
        text = (run_dir / STATUS_FILE).read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def send_launch(fd: int, argv: list[str], env: dict[str, str]) -> None:
    """The app's argv and environment to the keeper (which reads until end of file)."""
    try:
        data = memoryview(marshal.dumps((argv, env), 4))
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


async def read_report(fd: int, keeper: subprocess.Popen[bytes]) -> int:
    """The app's pid, once the keeper has started it; `OSError` (with the errno of the failed
    exec) when the app could not be started."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    chunks: list[bytes] = []

    def readable() -> None:
        data = os.read(fd, 64)
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(b"".join(chunks))

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(REPORT_TIMEOUT_S):
            report = await done
    except TimeoutError:
        keeper.kill()
        raise KeeperFailed(f"the exit keeper did not start the app within {REPORT_TIMEOUT_S:.0f}s") from None
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    if report.startswith(b"E"):
        code = int(report[1:] or 0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            keeper.wait(1.0)  # it ends at once: the app never ran
        raise OSError(code, os.strerror(code))
    if not report:
        raise KeeperFailed(f"the exit keeper ended before it started the app (status {keeper.wait()})")
    return int(report)


async def status_after_end(run_dir: Path, keeper: subprocess.Popen[bytes] | None) -> int | None:
    """The exit status of a run that just ended, once its keeper has written it; None when the
    keeper could not (it was killed too). Reaps the keeper when it is this agent's child."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STATUS_WAIT_S
    while True:
        code = read_status(run_dir)
        ended = keeper is None or keeper.poll() is not None
        if (code is not None and ended) or loop.time() > deadline:
            return code
        if code is None and keeper is not None and ended:
            return read_status(run_dir)  # it ended without a word (it was killed)
        await asyncio.sleep(0.005)
