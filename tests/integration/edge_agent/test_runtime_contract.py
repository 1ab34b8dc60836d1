"""The Runtime port's contract, run against every implementation (STYLE.md habit 7): native
processes, containers on a private Docker engine (skipped where none can run), and the SIMULATED
runtime the scale tests rely on.

What any runtime owes the supervisor (output with offsets, stdin, pause, resume, stop, kill, a
follower that stops at `finish`) is checked on all three, with an app that behaves as the
simulated one does (a banner, `tick N` lines, `echo: …` of its stdin, a clean exit on SIGTERM).
What only a runtime of real processes can do (process groups, SIGTERM ignored then SIGKILL,
adopting a process of an earlier agent run, resource usage) is checked on the two that run them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sdv_edge_agent.adapters.docker_runtime import DockerRuntime
from sdv_edge_agent.adapters.native import NativeRuntime
from sdv_edge_agent.adapters.simulated_runtime import SimulatedRuntime
from sdv_edge_agent.ports import RunSpec, Runtime, StdinUnavailable

APP = """\
import signal, sys, threading, time
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())  # printing in the handler could split a line
def say(text):  # one write per line: print() writes its pieces apart, and two threads print here
    sys.stdout.write(text + "\\n")
    sys.stdout.flush()
def echo():
    for line in sys.stdin:
        say("in: " + line.strip())
threading.Thread(target=echo, daemon=True).start()
print("err line", file=sys.stderr, flush=True)
n = 0
while not stop.is_set():
    n += 1
    say(f"n {n}")
    stop.wait(0.02)
say("term")
"""
# The app of the checks every runtime passes: what a simulated app does, done by a real program.
TICKER = """\
import signal, sys, threading
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
def say(text):  # one write per line: two threads print here
    sys.stdout.write(text + "\\n")
    sys.stdout.flush()
def echo():
    for line in sys.stdin:
        say("echo: " + line.rstrip("\\n"))
say("started")
threading.Thread(target=echo, daemon=True).start()
n = 0
while not stop.wait(0.02):
    n += 1
    say(f"tick {n}")
"""
TICK_S = 0.02
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)\n"

# The docker runtime builds an image from the app directory: a plain one, on the test base image.
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY main.py /app/main.py
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin app
USER 10001:10001
CMD ["python3", "-u", "/app/main.py"]
"""


@contextlib.contextmanager
def runtime_of(kind: str, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    if kind == "simulated":
        yield SimulatedRuntime("native", "contract-device", log_every_s=TICK_S)
        return
    if kind == "native":
        yield NativeRuntime()
        return
    engine = request.getfixturevalue("docker_host")
    docker_runtime = DockerRuntime(engine.client, owner="contract-test", base_image=engine.base_image)
    try:
        yield docker_runtime
    finally:
        docker_runtime.release("contract")


@pytest.fixture(params=["docker", "native"])
def runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """The runtimes of real processes."""
    with runtime_of(request.param, request) as made:
        yield made


@pytest.fixture(params=["docker", "native", "simulated"])
def any_runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    with runtime_of(request.param, request) as made:
        yield made


def spec(tmp_path: Path, source: str, name: str = "contract") -> RunSpec:
    app_dir = tmp_path / "app"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "main.py").write_text(source)
    (app_dir / "Dockerfile").write_text(DOCKERFILE)
    return RunSpec(app=name, version="1", argv=[sys.executable, "-u", "main.py"], cwd=app_dir,
                   env={"PATH": os.environ["PATH"]}, run_dir=tmp_path / "run", memory_mb=256, cpu=0.5,
                   digest=hashlib.sha256(source.encode()).hexdigest(), network="none")


class Lines:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.offsets: dict[str, int] = {}

    def __call__(self, rows: list[tuple[str, float, str]], offsets: dict[str, int]) -> None:
        self.rows += [(stream, line) for stream, _, line in rows]
        self.offsets = offsets

    def of(self, stream: str) -> list[str]:
        return [line for s, line in self.rows if s == stream]


async def until(check: Callable[[], object], timeout: float = 5.0,
                seen: Callable[[], object] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out; seen: {seen()}"
        await asyncio.sleep(0.02)


async def settled(lines: Lines, quiet_s: float = 0.2, timeout: float = 5.0) -> int:
    """The line count once it has not grown for `quiet_s`."""
    deadline = time.monotonic() + timeout
    count = -1
    while count != len(lines.rows):
        assert time.monotonic() < deadline, "output never settled"
        count = len(lines.rows)
        await asyncio.sleep(quiet_s)
    return count


async def test_start_output_stdin_pause_resume_stop(runtime: Runtime, tmp_path: Path) -> None:
    s = spec(tmp_path, APP)
    proc = await runtime.start(s)
    lines = Lines()
    follower = runtime.follow_output(s, proc, {}, lines)
    task = asyncio.create_task(follower.run())
    await until(lambda: len(lines.of("stdout")) > 3)
    assert lines.of("stderr") == ["err line"]
    assert os.getpgid(proc.pid) == proc.pid  # its own process group (and session)

    proc.write_stdin(b"hello\n")
    await until(lambda: "in: hello" in lines.of("stdout"), timeout=15.0,
                seen=lambda: (len(lines.rows), lines.rows[-3:]))

    runtime.pause(proc)
    frozen = await settled(lines)  # lines printed just before the pause may still be on their way
    await asyncio.sleep(0.5)
    assert len(lines.rows) == frozen
    runtime.resume(proc)
    await until(lambda: len(lines.rows) > frozen + 3)
    await until(lambda: runtime.usage(proc) is not None)  # a runtime may need a first sample
    usage = runtime.usage(proc)
    assert usage is not None
    assert usage.rss_bytes > 0

    runtime.pause(proc)  # a paused app still stops gracefully
    code = await runtime.stop(proc, 3.0)
    await follower.finish()
    await task
    assert code == 0
    assert lines.of("stdout")[-1] == "term"
    assert not proc.alive()
    with pytest.raises(StdinUnavailable):
        proc.write_stdin(b"anyone?\n")


async def test_stop_escalates_to_sigkill_after_the_timeout(runtime: Runtime, tmp_path: Path) -> None:
    proc = await runtime.start(spec(tmp_path, STUBBORN))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    code = await runtime.stop(proc, 0.5)
    assert code == -signal.SIGKILL
    assert 0.4 < time.monotonic() - started < 3


async def test_adopt_recognises_its_own_process_and_refuses_a_stranger(runtime: Runtime, tmp_path: Path) -> None:
    s = spec(tmp_path, APP)
    proc = await runtime.start(s)
    adopted = runtime.adopt(s, proc.pid, proc.started)
    assert adopted is not None
    assert adopted.alive()
    assert runtime.adopt(s, proc.pid, proc.started + 1.0) is None  # same pid, another process
    assert runtime.adopt(s, os.getpid(), 0.0) is None
    # An adopted process's end is seen too, with its status (a native app's exit keeper or the
    # container engine kept it, though the adopting agent is not the process's parent).
    adopted_wait = asyncio.create_task(adopted.wait())
    os.killpg(proc.pid, signal.SIGKILL)
    assert await asyncio.wait_for(proc.wait(), 3) == -signal.SIGKILL
    assert await asyncio.wait_for(adopted_wait, 3) == -signal.SIGKILL
    assert not runtime.kill_orphan(proc.pid, proc.started)


async def test_the_status_of_a_process_that_ended_while_no_agent_watched_is_kept(
    runtime: Runtime, tmp_path: Path
) -> None:
    s = spec(tmp_path, "import sys, time\ntime.sleep(0.3)\nsys.exit(3)\n")
    proc = await runtime.start(s)
    assert runtime.outlives_agent
    assert runtime.last_exit(s) is None  # still running
    await until(lambda: not proc.alive(), timeout=10.0)  # nobody waits for it
    await until(lambda: runtime.last_exit(s) is not None, timeout=3.0)
    assert runtime.last_exit(s) == 3
    killed = await runtime.start(s)  # a new run of the version forgets the last one's status
    assert runtime.last_exit(s) is None
    os.killpg(killed.pid, signal.SIGKILL)
    await until(lambda: runtime.last_exit(s) is not None, timeout=3.0)
    assert runtime.last_exit(s) == -signal.SIGKILL


async def test_output_resumes_from_saved_offsets_without_repeats(runtime: Runtime, tmp_path: Path) -> None:
    s = spec(tmp_path, "import time\nfor i in range(5):\n    print('line', i, flush=True)\ntime.sleep(0.5)\nprint('late', flush=True)\n")
    proc = await runtime.start(s)
    first = Lines()
    follower = runtime.follow_output(s, proc, {}, first)
    task = asyncio.create_task(follower.run())
    await until(lambda: len(first.of("stdout")) == 5)
    await follower.finish()
    await task
    await proc.wait()
    second = Lines()
    await runtime.follow_output(s, proc, first.offsets, second).finish()
    assert second.of("stdout") == ["late"]


# --- what every runtime owes the supervisor, the simulated one too ------------------------------


def ticks(lines: Lines) -> list[int]:
    return [int(m.group(1)) for line in lines.of("stdout") if (m := re.fullmatch(r"tick (\d+)", line))]


async def test_every_runtime_carries_output_and_stdin_pauses_resumes_and_stops(
    any_runtime: Runtime, tmp_path: Path
) -> None:
    s = spec(tmp_path, TICKER)
    proc = await any_runtime.start(s)
    assert proc.alive()
    lines = Lines()
    follower = any_runtime.follow_output(s, proc, {}, lines)
    task = asyncio.create_task(follower.run())
    await until(lambda: len(ticks(lines)) >= 3, seen=lambda: lines.rows[-3:])
    proc.write_stdin(b"hello\n")
    await until(lambda: "echo: hello" in lines.of("stdout"), timeout=15.0, seen=lambda: lines.rows[-3:])

    any_runtime.pause(proc)
    frozen = await settled(lines)
    proc.write_stdin(b"while paused\n")  # waits, like bytes in a pipe nobody reads yet
    await asyncio.sleep(0.5)
    assert len(lines.rows) == frozen
    any_runtime.resume(proc)
    await until(lambda: "echo: while paused" in lines.of("stdout") and len(ticks(lines)) > frozen,
                timeout=15.0, seen=lambda: lines.rows[-3:])

    any_runtime.pause(proc)  # a paused app still stops gracefully
    assert await any_runtime.stop(proc, 3.0) == 0
    await follower.finish()
    await asyncio.wait_for(task, 5)
    assert not proc.alive()
    assert ticks(lines) == list(range(1, len(ticks(lines)) + 1))  # none lost, none twice
    assert lines.offsets["stdout"] > 0
    with pytest.raises(StdinUnavailable):
        proc.write_stdin(b"anyone?\n")


async def test_every_follower_stops_at_finish_and_the_next_resumes_from_its_offsets(
    any_runtime: Runtime, tmp_path: Path
) -> None:
    """The supervisor's console shipping across agent restarts: a follower delivers nothing once
    `finish` returned, and one started from its offsets goes on with no line lost or repeated."""
    s = spec(tmp_path, TICKER)
    proc = await any_runtime.start(s)
    first = Lines()
    follower = any_runtime.follow_output(s, proc, {}, first)
    task = asyncio.create_task(follower.run())
    await until(lambda: len(ticks(first)) >= 5, seen=lambda: first.rows[-3:])
    await follower.finish()
    delivered = len(first.rows)
    await asyncio.wait_for(task, 5)  # the app prints on: `run` ends all the same
    await asyncio.sleep(5 * TICK_S)
    assert len(first.rows) == delivered

    second = Lines()
    follower = any_runtime.follow_output(s, proc, first.offsets, second)
    task = asyncio.create_task(follower.run())
    await until(lambda: len(ticks(second)) >= 3, seen=lambda: second.rows[-3:])
    assert await any_runtime.stop(proc, 3.0) == 0
    await follower.finish()
    await asyncio.wait_for(task, 5)
    both = ticks(first) + ticks(second)
    assert both == list(range(1, len(both) + 1)), (ticks(first)[-3:], ticks(second)[:3])


async def test_every_runtime_kills_a_paused_app_and_adopts_no_stranger(
    any_runtime: Runtime, tmp_path: Path
) -> None:
    s = spec(tmp_path, TICKER)
    proc = await any_runtime.start(s)
    assert any_runtime.adopt(s, proc.pid, proc.started + 1.0) is None  # same pid, another process
    assert any_runtime.adopt(s, os.getpid(), 0.0) is None
    any_runtime.pause(proc)
    any_runtime.kill(proc)
    assert await asyncio.wait_for(proc.wait(), 5) == -signal.SIGKILL
    assert not proc.alive()
    assert not any_runtime.kill_orphan(proc.pid, proc.started)  # nothing left to kill
    with pytest.raises(StdinUnavailable):
        proc.write_stdin(b"anyone?\n")
