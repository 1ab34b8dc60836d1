"""What `sdv up` keeps running, and how: every process it started — NATS, PostgreSQL, the
services, the local agents — is a `Supervised` child, restarted when it dies.

Restarts back off (`RestartPolicy`): the first at once, then 1 s, 2 s, 4 s … up to `max_s`. A
child that stayed up for `stable_s` before it died starts over at "at once": a crash a day never
keeps a service down for long. A child that dies `give_up_after` times in a row without such a
stable period (or cannot be started at all that often) makes the suite stop, loudly, with its
last words (`GaveUp`): a suite that limps on without, say, its database helps nobody.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class RestartPolicy:
    base_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0  # up this long before dying: the next restart is immediate again
    give_up_after: int = 6  # deaths in a row, none after a stable period: the suite stops

    @classmethod
    def from_env(cls) -> RestartPolicy:
        """`SDV_UP_STABLE_S` (tests shorten it to see the reset)."""
        stable = os.environ.get("SDV_UP_STABLE_S")
        return cls(stable_s=float(stable)) if stable else cls()


@dataclass
class Restarts:
    """One child's restart count and backoff. Pure: durations in, delays out."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    in_a_row: int = 0  # deaths since the last stable period
    total: int = 0

    def after_death(self, up_for_s: float) -> float | None:
        """Seconds to wait before the restart; None: give up."""
        if up_for_s >= self.policy.stable_s:
            self.in_a_row = 0
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row > self.policy.give_up_after:
            return None
        if self.in_a_row == 1:
            return 0.0
        return min(self.policy.max_s, self.policy.base_s * 2.0 ** (self.in_a_row - 2))


class GaveUp(Exception):
    """A child kept dying; the message says which, how often, and its log's last lines."""


class Supervised:
    """A child `sdv up` started and restarts. Subclasses say how to start, stop and see it."""

    name: str
    log_path: Path

    def __init__(self, name: str, log_path: Path, policy: RestartPolicy | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self.backoff = Restarts(policy or RestartPolicy())
        self.started_at: float | None = None  # monotonic
        self.restart_due: float | None = None  # seen dead; restarted at this monotonic time
        self.last_death = ""
        self._start_failed: str | None = None  # why the last start failed, if it did

    # --- what each kind of child says --------------------------------------------------------

    def launch(self) -> None:
        """Start it (blocking until it is up, for a server); raise to say it could not."""
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def death(self) -> str:
        """How it ended, e.g. "exited with code -9"."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    # --- supervision -------------------------------------------------------------------------

    @property
    def restarts(self) -> int:
        return self.backoff.total

    def start(self) -> None:
        self.launch()
        self.started_at = time.monotonic()
        self.restart_due = None
        self._start_failed = None

    async def supervise(self, now: float) -> str | None:
        """One look at the child: a line to tell the user when something happened; `GaveUp`."""
        if self.running():
            return None
        if self.restart_due is None:
            self.last_death = self._start_failed or self.death()
            delay = self.backoff.after_death(now - (self.started_at or now))
            if delay is None:
                raise GaveUp(f"{self.name} {self.last_death}, {self.backoff.in_a_row} times in a row "
                             f"without staying up {self.backoff.policy.stable_s:.0f}s; its log "
                             f"({self.log_path}) ends with:\n{log_tail(self.log_path)}")
            self.restart_due = now + delay
            if delay > 0:
                return f"{self.name} {self.last_death}; restarting in {delay:g}s (log: {self.log_path})"
        if now < self.restart_due:
            return None
        try:
            await asyncio.to_thread(self.start)
        except Exception as exc:  # counted as another death at the next look
            self.started_at, self.restart_due = now, None
            self._start_failed = f"could not be started ({exc})"
            return f"{self.name} could not be restarted: {exc}"
        return f"{self.name} {self.last_death}; restarted (log: {self.log_path})"


class ChildProcess(Supervised):
    """A process of its own process group (Ctrl-C in a terminal reaches `sdv up` only, which
    stops its children in order), its output appended to `log_path`."""

    def __init__(self, name: str, argv: Callable[[], list[str]], env: Callable[[], dict[str, str]],
                 log_path: Path, policy: RestartPolicy | None = None, stop_grace_s: float = 10.0) -> None:
        super().__init__(name, log_path, policy)
        self.argv = argv
        self.env = env
        self.stop_grace_s = stop_grace_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return self.process.poll() if self.process is not None else None

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv(), env=self.env(), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, process_group=0)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def death(self) -> str:
        code = self.exit_code
        return "never started" if code is None else f"exited with code {code}"

    def signal(self, sig: int) -> None:
        if self.running() and self.process is not None:
            self.process.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(self.stop_grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Server(Protocol):
    process: subprocess.Popen[bytes] | None

    def running(self) -> bool: ...

    def stop(self, *, keep_data: bool = False) -> None: ...


class ServerChild(Supervised):
    """An embedded server (NATS, PostgreSQL): started on the same port with the same data again,
    so clients only reconnect. `launch` is the server's own start (PostgreSQL: or adopt one
    restarted by hand)."""

    def __init__(self, name: str, server: Server, launch: Callable[[], object], log_path: Path,
                 policy: RestartPolicy | None = None) -> None:
        super().__init__(name, log_path, policy)
        self.server = server
        self._launch = launch

    def launch(self) -> None:
        self._launch()

    def running(self) -> bool:
        return self.server.running()

    def death(self) -> str:
        code = self.server.process.poll() if self.server.process is not None else None
        return "stopped" if code is None else f"exited with code {code}"

    def stop(self) -> None:
        self.server.stop(keep_data=True)
