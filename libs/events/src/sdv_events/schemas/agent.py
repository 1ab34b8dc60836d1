"""Device facts: what an agent reports happened, on `sdv.evt.agent.<device_id>.<Type>`.

Agents publish these straight to JetStream `SDV_EVENTS` (they have no event store) as envelopes
with stream id `agent-<device_id>` and a `Nats-Msg-Id` built from (device, app, digest, desired
revision, type), so a redelivered or repeated report is dropped as a duplicate. A category of
its own: a device may publish its facts but can never forge a service's events.
"""

from __future__ import annotations

import msgspec

from sdv_events.registry import event


class AppFact(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    app: str
    version: str
    digest: str
    desired_revision: int
    rollout_id: str | None = None


@event("agent.AppDownloadStarted")
class AppDownloadStarted(AppFact, frozen=True, kw_only=True):
    size: int = 0


@event("agent.AppInstalled")
class AppInstalled(AppFact, frozen=True, kw_only=True):
    pass


@event("agent.AppStarted")
class AppStarted(AppFact, frozen=True, kw_only=True):
    pid: int | None = None


@event("agent.AppHealthy")
class AppHealthy(AppFact, frozen=True, kw_only=True):
    pass


@event("agent.AppFailed")
class AppFailed(AppFact, frozen=True, kw_only=True):
    reason: str
    stage: str = "run"  # download | verify | install | start | health | run


@event("agent.AppRolledBack")
class AppRolledBack(AppFact, frozen=True, kw_only=True):
    to_version: str | None
    reason: str


@event("agent.AppPaused")
class AppPaused(AppFact, frozen=True, kw_only=True):
    pass


@event("agent.AppResumed")
class AppResumed(AppFact, frozen=True, kw_only=True):
    pass


@event("agent.AppStopped")
class AppStopped(AppFact, frozen=True, kw_only=True):
    exit_code: int | None = None


@event("agent.AppUninstalled")
class AppUninstalled(AppFact, frozen=True, kw_only=True):
    pass
