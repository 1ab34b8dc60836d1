"""SIMULATED runtime, for scale tests of the control plane (`sdv-agent --simulate N`): it
implements the `Runtime` port without running anything. No process is spawned, no limit is
enforced; everything around it (reconcile, supervisor, facts, reported state, console shipping,
heartbeats) is the real agent code.

A `SimulatedProcess` has a made-up pid from a range no Linux pid reaches (pid_max is at most
2^22), so it can never be mistaken for, or signal, a real process. It lives until stopped or
killed, and pause/resume are flags (a paused process prints nothing). Its console is a start
banner, optionally a line every `log_every_s`, and an echo of what is written to its stdin, all
delivered through the same `LinesSink` as a real process's output, so console shipping is
exercised.

Failures are decided by `FailurePlan`: a version that fails crashes `crash_after_s` after every
start — before any health window ends — for the same (seed, device, app, version) every time, so
a test can compute which devices fail. Nothing outlives the simulator: `adopt` finds nothing
and a restarted simulator starts its apps afresh.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import itertools
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from sdv_edge_agent.ports import HealthCommand, LinesSink, Process, RunSpec, StdinUnavailable, Usage
from sdv_events.schemas.packages import PackageInfo

SIMULATED_LIMITS = "simulated: nothing enforced"
SIMULATED_CRASH = "simulated crash"
FIRST_PID = 10_000_001  # above any Linux pid (pid_max ≤ 4,194,304)
_pids = itertools.count(FIRST_PID)


@dataclass(frozen=True)
class FailurePlan:
    """Which versions crash: a `rate` share of (device, app, version) triples among those whose
    version matches one of `versions` (fnmatch patterns), picked by a hash seeded with `seed`."""

    rate: float = 0.0
    seed: int = 0
    versions: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"failure rate {self.rate} is not between 0 and 1")

    def fails(self, device_id: str, app: str, version: str) -> bool:
        if self.rate <= 0.0 or not any(fnmatch.fnmatchcase(version, p) for p in self.versions):
            return False
        digest = hashlib.sha256(f"{self.seed}\0{device_id}\0{app}\0{version}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.rate


class SimulatedProcess:
    def __init__(self, spec: RunSpec) -> None:
        self.pid = next(_pids)
        self.started = time.time()
        self.spec = spec
        self.paused = False
        self._exit: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._reason: str | None = None
        self._lines: list[tuple[str, float, str]] = []  # printed, not yet delivered
        self.printed = asyncio.Event()
        self._stdin_held: list[str] = []  # written while paused: echoed on resume

    def alive(self) -> bool:
        return not self._exit.done()

    async def wait(self) -> int | None:
        return await asyncio.shield(self._exit)

    def write_stdin(self, data: bytes) -> None:
        if not self.alive():
            raise StdinUnavailable(f"simulated process {self.pid} has ended")
        text = data.decode(errors="replace")
        lines = text.splitlines() or [text]
        if self.paused:
            self._stdin_held += lines
            return
        for line in lines:
            self.print("stdout", f"echo: {line}")

    def exit_reason(self) -> str | None:
        return self._reason

    def print(self, stream: str, line: str) -> None:
        self._lines.append((stream, time.time(), line))
        self.printed.set()

    def take_lines(self) -> list[tuple[str, float, str]]:
        lines, self._lines = self._lines, []
        self.printed.clear()
        return lines

    def end(self, code: int | None, reason: str | None = None) -> None:
        if self._exit.done():
            return
        self._reason = reason
        self._exit.set_result(code)
        self.printed.set()  # wake the follower: it drains and notices the end

    def resume(self) -> None:
        self.paused = False
        held, self._stdin_held = self._stdin_held, []
        for line in held:
            self.print("stdout", f"echo: {line}")


def _simulated(process: Process) -> SimulatedProcess:
    if not isinstance(process, SimulatedProcess):
        raise TypeError(f"the simulated runtime cannot handle {type(process).__name__}")
    return process


class SimulatedRuntime:
    """Registered once per runtime name a package may ask for ("native", "docker"), so real
    packages built for either install and 'run' in simulation."""

    limits = SIMULATED_LIMITS
    outlives_agent = False  # nothing outlives the simulator: a restarted simulation starts apps again

    def __init__(self, name: str, device_id: str, *, failures: FailurePlan | None = None,
                 crash_after_s: float = 0.05, log_every_s: float = 0.0) -> None:
        self.name = name
        self.device_id = device_id
        self.failures = failures or FailurePlan()
        self.crash_after_s = crash_after_s
        self.log_every_s = log_every_s
        self._tickers: dict[int, asyncio.Task[None]] = {}

    async def prepare(self, package: PackageInfo, app_dir: Path) -> None:
        """Nothing to build (a container runtime builds its image here)."""

    async def start(self, spec: RunSpec) -> SimulatedProcess:
        process = SimulatedProcess(spec)
        process.print("stdout", f"simulated {spec.app} {spec.version} pid {process.pid} "
                                f"({self.name}; no process: simulation mode)")
        if self.failures.fails(self.device_id, spec.app, spec.version):
            loop = asyncio.get_running_loop()
            loop.call_later(self.crash_after_s, self._crash, process)
        elif self.log_every_s > 0:
            self._tickers[process.pid] = asyncio.create_task(self._tick(process))
        return process

    def _crash(self, process: SimulatedProcess) -> None:
        if process.alive():
            process.print("stderr", f"{SIMULATED_CRASH} (failure plan: rate {self.failures.rate}, "
                                    f"seed {self.failures.seed})")
            self._ended(process, 1, SIMULATED_CRASH)

    async def _tick(self, process: SimulatedProcess) -> None:
        n = 0
        while process.alive():
            await asyncio.sleep(self.log_every_s)
            if process.alive() and not process.paused:
                n += 1
                process.print("stdout", f"tick {n}")

    def _ended(self, process: SimulatedProcess, code: int | None, reason: str | None = None) -> None:
        ticker = self._tickers.pop(process.pid, None)
        if ticker is not None:
            ticker.cancel()
        process.end(code, reason)

    def adopt(self, spec: RunSpec, pid: int, started: float) -> SimulatedProcess | None:
        return None  # nothing outlives the simulator

    def pause(self, process: Process) -> None:
        _simulated(process).paused = True

    def resume(self, process: Process) -> None:
        _simulated(process).resume()

    async def stop(self, process: Process, timeout_s: float) -> int | None:
        """A simulated app stops at once, cleanly, paused or not."""
        process = _simulated(process)
        if process.alive():
            self._ended(process, 0)
        return await process.wait()

    def kill(self, process: Process) -> None:
        self._ended(_simulated(process), -signal.SIGKILL)

    def kill_orphan(self, pid: int, started: float) -> bool:
        return False

    def last_exit(self, spec: RunSpec) -> int | None:
        return None

    def usage(self, process: Process) -> Usage | None:
        return None  # nothing is measured: heartbeats say so (no cpu/rss) rather than invent numbers

    def release(self, app: str) -> None:
        pass

    def prune(self, app: str, keep: list[PackageInfo]) -> None:
        pass

    def follow_output(
        self, spec: RunSpec, process: Process | None, offsets: dict[str, int], sink: LinesSink
    ) -> SimulatedFollower:
        return SimulatedFollower(_simulated(process) if process is not None else None, offsets, sink)


class SimulatedFollower:
    """Hands a simulated process's lines to the sink; the offsets it reports count lines."""

    def __init__(self, process: SimulatedProcess | None, offsets: dict[str, int], sink: LinesSink) -> None:
        self.process = process
        self.offsets = {"stdout": offsets.get("stdout", 0), "stderr": offsets.get("stderr", 0)}
        self.sink = sink
        self._stopping = False

    def _deliver(self) -> None:
        if self.process is None:
            return
        rows = self.process.take_lines()
        if rows:
            for stream, _, _ in rows:
                self.offsets[stream] = self.offsets.get(stream, 0) + 1
            self.sink(rows, dict(self.offsets))

    async def run(self) -> None:
        while self.process is not None and not self._stopping:
            await self.process.printed.wait()
            if self._stopping:
                return  # `finish` woke it: what was printed is the next follower's
            self._deliver()
            if not self.process.alive():
                return

    async def finish(self) -> None:
        """Deliver what is left and stop: `run` returns, and delivers nothing more, even while
        the app prints on (a follower started from these offsets takes over)."""
        self._stopping = True
        self._deliver()
        if self.process is not None:
            self.process.printed.set()  # wake `run`, which would otherwise wait for the next line


def simulated_health_command(passes_after_s: float) -> HealthCommand:
    """A package's health command, simulated: it passes after `passes_after_s` (longer than a
    failing version lives, so a crash is seen first), and spawns nothing."""

    async def run(spec: RunSpec, command: list[str], timeout_s: float) -> tuple[bool, str]:
        await asyncio.sleep(min(passes_after_s, timeout_s))
        return True, ""

    return run
