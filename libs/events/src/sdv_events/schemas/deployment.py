"""Desired and reported state per device: KV `sdv_desired` / `sdv_reported`, key `<device_id>`.

The orchestrator writes a device's desired document (a projection of its rollout events, so it
can be rebuilt); the device's agent watches its own key, reconciles (level-triggered: only the
newest document matters), and writes what actually runs to `sdv_reported`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from sdv_events.envelope import TraceContext
from sdv_events.schemas.packages import PackageInfo

RunState = Literal["running", "paused", "stopped"]
LifecycleState = Literal[
    "INSTALLING", "INSTALLED", "STARTING", "RUNNING", "PAUSED", "STOPPED", "UNINSTALLING", "FAILED"
]


class DesiredApp(msgspec.Struct, frozen=True, kw_only=True):
    package: PackageInfo  # name, version, digest, signature, runtime, resources, health …
    state: RunState = "running"
    config: dict[str, str] = {}  # environment for the app
    rollout_id: str | None = None
    # Set by the orchestrator on an assignment restored by a rollback: only then does an agent
    # install a version older than the one it runs (older documents decode as False).
    rollback: bool = False
    # The trace of the rollout that assigned it: the agent's work and facts for it join that
    # trace (one rollout, one trace). Empty for documents written before, and after a rollback.
    trace: TraceContext = TraceContext()


class DesiredState(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    # Monotonic per device, set by the orchestrator; agents ignore anything not newer.
    revision: int
    apps: dict[str, DesiredApp] = {}
    updated_at: datetime | None = None


class ReportedApp(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    digest: str
    state: LifecycleState
    healthy: bool = False
    restarts: int = 0
    previous_version: str | None = None
    last_error: str | None = None
    pid: int | None = None
    started_at: datetime | None = None


class ReportedState(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    desired_revision: int  # the desired revision the agent has reconciled against
    apps: dict[str, ReportedApp] = {}
    agent_version: str = ""
    updated_at: datetime | None = None
