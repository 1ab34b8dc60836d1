"""Memory and cpu limits for native app processes: cgroups v2 where the agent may create cgroups
with the memory and cpu controllers, otherwise `setrlimit` plus the agent's RSS watchdog.

Without a writable cgroup v2 there is no way to cap a process's cpu share: the fallback says so in
`describe()` (reported in logs and capabilities) instead of pretending. Memory falls back to an
address-space ceiling (RLIMIT_AS, generous because Python and gRPC reserve far more virtual memory
than they use) while the agent's watchdog stops an app whose resident set exceeds its limit.
"""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

import structlog

from sdv_edge_agent.adapters.sandbox import confine
from sdv_edge_agent.ports import NO_SANDBOX, Sandbox

log = structlog.get_logger("sdv.agent.limits")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


def _cgroup2_mount() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


class Limits:
    def __init__(self, parent: Path | None) -> None:
        self.parent = parent  # a cgroup v2 directory whose children get memory+cpu, or None

    @classmethod
    def detect(cls, name: str = "sdv-agent") -> Limits:
        mount = _cgroup2_mount()
        if mount is None:
            return cls(None)
        try:
            controllers = (mount / "cgroup.controllers").read_text().split()
            if not {"memory", "cpu"} <= set(controllers):
                return cls(None)
            parent = mount / name
            parent.mkdir(exist_ok=True)
            (mount / "cgroup.subtree_control").write_text("+memory +cpu")
            (parent / "cgroup.subtree_control").write_text("+memory +cpu")
            return cls(parent)
        except OSError as exc:
            log.info("cgroup_v2_unavailable", reason=str(exc))
            return cls(None)

    def describe(self) -> str:
        if self.parent is not None:
            return f"cgroup v2 ({self.parent}): memory.max, cpu.max"
        return "setrlimit (address-space ceiling) + RSS watchdog; cpu limit not enforced (no cgroup v2)"

    def prepare(self, app: str, memory_mb: int, cpu: float) -> Path | None:
        """The cgroup the app's process joins, with its limits written; None in fallback mode."""
        if self.parent is None:
            return None
        group = self.parent / app
        try:
            group.mkdir(exist_ok=True)
            (group / "memory.max").write_text(str(memory_mb * 1024 * 1024))
            (group / "memory.swap.max").write_text("0") if (group / "memory.swap.max").exists() else None
            (group / "cpu.max").write_text(f"{max(1000, int(cpu * CPU_PERIOD_US))} {CPU_PERIOD_US}")
            return group
        except OSError as exc:
            log.warning("cgroup_prepare_failed", app=app, reason=str(exc))
            return None

    def release(self, app: str) -> None:
        if self.parent is not None:
            with contextlib.suppress(OSError):
                (self.parent / app).rmdir()


def child_setup(cgroup: Path | None, memory_mb: int, sandbox: Sandbox = NO_SANDBOX):  # type: ignore[no-untyped-def]
    """The pre-exec hook run in the forked child: join the cgroup, or set the rlimit ceiling,
    then drop into the sandbox (which needs the agent's privileges up to its last step).
    Only system calls happen here (no locks, no logging): it runs between fork and exec."""
    procs = str(cgroup / "cgroup.procs") if cgroup is not None else None
    ceiling = max(memory_mb * 4, memory_mb + 1024) * 1024 * 1024

    def setup() -> None:
        if procs is not None:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        else:
            resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        confine(sandbox)

    return setup
