"""What an app supervisor (supervisor.py) works on: the instances (processes) of the app's
versions, and the messages its inbox takes, one at a time."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from typing import Any

from sdv_edge_agent.adapters.packages import InstalledVersion
from sdv_edge_agent.domain.activation import ActivationKey
from sdv_edge_agent.domain.records import AppRecord
from sdv_edge_agent.ports import OutputFollower, Process, RunSpec, Usage
from sdv_events.gates import Verdict
from sdv_events.schemas.packages import PackageInfo


@dataclass(eq=False)
class Instance:
    """One process of one version of the app."""

    package: PackageInfo
    installed: InstalledVersion
    spec: RunSpec
    process: Process
    follower: OutputFollower
    run: int  # the record's run number when it started: its facts' identity
    healthy: bool = False
    stopping: bool = False  # an intended stop: its exit is not a crash
    kill_reason: str | None = None
    usage: Usage | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def cancel_tasks(self) -> None:
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()


# --- inbox messages --------------------------------------------------------------------------


@dataclass(frozen=True)
class Poke:
    """The desired state may have changed: reconcile."""


@dataclass(frozen=True, eq=False)
class Exited:
    instance: Instance
    code: int | None


@dataclass(frozen=True, eq=False)
class HealthResult:
    instance: Instance
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class RestartDue:
    generation: int


@dataclass(frozen=True)
class Vanished:
    """The active version's process ended while no agent ran (found at start, see recovery.py)."""

    reason: str


@dataclass(frozen=True, eq=False)
class OpRequest:
    op: str
    data: bytes
    reply: asyncio.Future[AppRecord]


@dataclass(frozen=True)
class GatesOpen:
    """Every gate of the activation `key` held (activation.py): the switch may go ahead."""

    key: ActivationKey


@dataclass(frozen=True)
class GatesClosed:
    """The gates of `key` do not hold, for a reason other than the one told before."""

    key: ActivationKey
    verdict: Verdict


Message = Poke | Exited | HealthResult | RestartDue | Vanished | OpRequest | GatesOpen | GatesClosed


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (its exit status is unknown)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"
