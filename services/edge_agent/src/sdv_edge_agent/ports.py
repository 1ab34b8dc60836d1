"""The ports the application layer drives: a runtime that runs app processes, and the sinks it
reports through. One small interface per concern; adapters implement them (native processes
`adapters/native.py`, containers `adapters/docker_runtime.py`, simulated; the agent picks one per
package by its `runtime`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sdv_edge_agent.domain.attribution import Cause
from sdv_edge_agent.domain.records import AppRecord
from sdv_edge_agent.domain.restarts import RestartPolicy
from sdv_events.gates import Gate, Verdict
from sdv_events.schemas.agent import AppFact, DesiredRefused
from sdv_events.schemas.deployment import DesiredApp
from sdv_events.schemas.packages import PackageInfo

if TYPE_CHECKING:
    from sdv_edge_agent.adapters.packages import InstalledVersion

# (stream, wall-clock time, line) for each complete console line, and the read position reached.
LinesSink = Callable[[list[tuple[str, float, str]], dict[str, int]], None]


@dataclass(frozen=True)
class Sandbox:
    """Who the app runs as and what it may reach (see adapters/sandbox.py)."""

    level: str = "none"  # none | standard | strict
    uid: int | None = None  # None: the agent's own user
    gid: int | None = None
    no_network: bool = False  # an empty network namespace of its own
    # (source, target) bind mounts made in a mount namespace of its own: its private /tmp,
    # /var/tmp and /dev/shm (see adapters/sandbox.py private_tmp_binds). Bytes: used between
    # fork and exec.
    binds: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def confined(self) -> bool:
        return self.level != "none"


NO_SANDBOX = Sandbox()


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to run one version of one app."""

    app: str
    version: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    run_dir: Path  # console files and the stdin pipe of this app
    memory_mb: int
    cpu: float
    sandbox: Sandbox = NO_SANDBOX
    digest: str = ""  # the package's: names the version's container image
    network: str = "kuksa-only"  # the package's security.network: kuksa-only | none | full


class StdinUnavailable(Exception):
    """The app's stdin is gone (it ended) or full (it does not read it)."""


@dataclass(frozen=True)
class Usage:
    cpu_pct: float
    rss_bytes: int


class Process(Protocol):
    pid: int
    started: float  # the OS's start time of the process: a reused pid is not this process

    def alive(self) -> bool: ...

    async def wait(self) -> int | None:
        """The exit status once it ended (negative: killed by that signal; None: unknown)."""
        ...

    def write_stdin(self, data: bytes) -> None: ...

    def exit_reason(self) -> str | None:
        """Why the runtime itself ended the process (say, killed at its memory limit), if it knows."""
        ...


@runtime_checkable
class RunsCommands(Protocol):
    """A process whose runtime runs commands inside its environment (a container: an exec). The
    package's health command runs there; for other processes it runs on the host, in the app's
    directory and environment."""

    async def run_command(self, argv: list[str], timeout_s: float) -> tuple[int | None, str]:
        """(exit status or None if it did not finish in time, the tail of its stderr)."""
        ...


class Runtime(Protocol):
    name: str
    limits: str  # how memory/cpu limits are enforced here, for people
    # Whether an app's process outlives the agent (the next agent run re-adopts it): then one
    # found gone at start ended while no agent ran, which is a crash to report.
    outlives_agent: bool

    async def prepare(self, package: PackageInfo, app_dir: Path) -> None:
        """Make an installed version runnable (build its container image, say): at install time,
        so slow work and its failures belong to the install. Raises `InstallError`."""
        ...

    async def start(self, spec: RunSpec) -> Process: ...

    def adopt(self, spec: RunSpec, pid: int, started: float) -> Process | None:
        """The process of an earlier agent run, if it is still alive and still ours."""
        ...

    def pause(self, process: Process) -> None: ...

    def resume(self, process: Process) -> None: ...

    async def stop(self, process: Process, timeout_s: float) -> int | None: ...

    def kill(self, process: Process) -> None: ...

    def kill_orphan(self, pid: int, started: float) -> bool:
        """Kill a process of an earlier agent run (if it is still that process); True if killed."""
        ...

    def last_exit(self, spec: RunSpec) -> int | None:
        """The exit status of the version's last process, which ended while no agent watched
        (negative: killed by that signal), if the runtime kept it; None if unknown."""
        ...

    def usage(self, process: Process) -> Usage | None: ...

    def release(self, app: str) -> None:
        """Free what the runtime set up for the app (its cgroup, …) once it is uninstalled."""
        ...

    def prune(self, app: str, keep: list[PackageInfo]) -> None:
        """Free what the runtime holds for versions of the app other than `keep` (an upgrade
        keeps the active and the previous version)."""
        ...

    def follow_output(
        self, spec: RunSpec, process: Process | None, offsets: dict[str, int], sink: LinesSink
    ) -> OutputFollower:
        """`process` None: only drain what an ended process of an earlier agent run left."""
        ...


class OutputFollower(Protocol):
    """Delivers a process's console lines to a sink until stopped; `finish` drains the rest."""

    async def run(self) -> None: ...

    async def finish(self) -> None: ...


# Runs a package's health command for a started version until it passes or the timeout ends:
# (spec, command, timeout_s) → (passed, why not). The agent's default runs it as a process.
HealthCommand = Callable[[RunSpec, list[str], float], Awaitable[tuple[bool, str]]]


class VehicleSignals(Protocol):
    """Live vehicle signals for activation gates (adapters/vehicle_signals.py: a subscription to
    the databroker, no polling)."""

    async def wait_until(
        self,
        gates: Sequence[Gate],
        timeout_s: float | None = None,
        on_deferred: Callable[[Verdict], None] | None = None,
    ) -> Verdict:
        """Return once every gate holds (or `timeout_s` passed); `on_deferred` hears each new
        reason they do not."""
        ...


class Clock(Protocol):
    """The time an app supervisor reads: `monotonic` for delays within this agent run, `wall`
    for times kept across reboots (crash times, started and healthy times)."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class AppStore(Protocol):
    """What an app supervisor keeps in the agent's store (adapters/store.py)."""

    def save_app(self, record: AppRecord) -> None: ...

    def delete_app(self, name: str) -> None: ...

    def tail_offsets(self, tail_key: str) -> dict[str, int]: ...

    def reset_tail(self, tail_key: str) -> None: ...


class AppInstaller(Protocol):
    """What an app supervisor asks of the installer (adapters/packages.py)."""

    def installed(self, package: PackageInfo) -> InstalledVersion | None: ...

    def signed_problem(self, package: PackageInfo) -> str | None: ...

    async def install(self, package: PackageInfo, artifact: bytes) -> InstalledVersion: ...


class AppFacts(Protocol):
    """Where an app supervisor's facts go (the agent's repeat-counting fact sink)."""

    def emit(self, fact: AppFact | DesiredRefused, run: int | None = None) -> bool: ...


class AppHost(Protocol):
    """Exactly what an app supervisor (supervisor.py and the modules it delegates to) and its
    recovery use of the agent that owns it (application.py `Agent`)."""

    @property
    def device_id(self) -> str: ...
    @property
    def store(self) -> AppStore: ...
    @property
    def installer(self) -> AppInstaller: ...
    @property
    def facts(self) -> AppFacts: ...
    @property
    def runtimes(self) -> dict[str, Runtime]: ...
    @property
    def signals(self) -> VehicleSignals: ...
    @property
    def restart_policy(self) -> RestartPolicy: ...
    @property
    def stop_timeout_s(self) -> float: ...
    @property
    def python_version(self) -> str: ...
    @property
    def revision(self) -> int: ...
    @property
    def download(self) -> Callable[[PackageInfo], Awaitable[bytes]]: ...

    def desired_app(self, name: str) -> DesiredApp | None: ...

    def desired_rollout(self, name: str) -> str | None: ...

    def cause_of(self, name: str) -> Cause | None: ...

    def changed(self) -> None: ...

    def runtime_for(self, package: PackageInfo) -> Runtime: ...

    def sandbox_for(self, package: PackageInfo) -> Sandbox: ...

    def run_dir(self, app: str, package: PackageInfo) -> Path: ...

    def app_env(self, record: AppRecord, package: PackageInfo,
                installed: InstalledVersion) -> dict[str, str]: ...

    def lines_sink(self, app: str, tail_key: str) -> LinesSink: ...

    def prune_versions(self, app: str, keep: list[PackageInfo]) -> None: ...

    def remove_app_files(self, app: str) -> None: ...

    async def run_health_command(
        self, spec: RunSpec, command: list[str], timeout_s: float, process: Process | None = None
    ) -> tuple[bool, str]: ...
