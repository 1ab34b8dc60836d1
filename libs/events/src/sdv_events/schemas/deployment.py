"""Desired and reported state per device: KV `sdv_desired` / `sdv_reported`, key `<device_id>`.

The orchestrator writes a device's desired document (a projection of its rollout events, so it
can be rebuilt), signed with its own key: the value in `sdv_desired` is a `SignedDesired`
(`sdv_events.desired_signing` signs and verifies it). The device's agent watches its own key,
acts only on a document the orchestrator signed for it, reconciles (level-triggered: only the
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


class Activation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """When an agent may switch an app to the desired version it has downloaded and verified
    (download now, activate later). Absent: at once, as before."""

    # Conditions on live VSS signals (`sdv_events.gates`), judged against the vehicle's
    # databroker; until every one holds the agent keeps the running version and reports
    # `agent.ActivationDeferred`.
    gates: list[str] = []
    # Download and verify only; switch when a later document clears it (a maintenance window
    # opening, or `sdv rollout activate`).
    hold: bool = False


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
    activation: Activation | None = None


class DesiredState(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    # Monotonic per device, set by the orchestrator; agents ignore anything not newer.
    revision: int
    apps: dict[str, DesiredApp] = {}
    updated_at: datetime | None = None


class SignedDesired(msgspec.Struct, frozen=True, kw_only=True):
    """The value in KV `sdv_desired`: a `DesiredState` as JSON, kept byte for byte (msgspec.Raw,
    so nothing needs a canonical form and the value stays readable), with the orchestrator's
    Ed25519 signature over exactly those bytes (see `sdv_events.desired_signing`)."""

    document: msgspec.Raw
    key_id: str  # which orchestrator key signed it (sha256 of the raw public key, 16 hex)
    signature: str  # base64


class GetPublicKey(msgspec.Struct, frozen=True):
    """`sdv.cmd.orchestrator.public_key`: the key agents pin (`sdv-agent --orchestrator-key`);
    the answer is a `SigningKey` (schemas.packages)."""


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
    # Why the agent refused the desired document now in its key (unsigned, another key, another
    # device, an older revision replayed …); None once it accepts a document again.
    desired_refused: str | None = None
