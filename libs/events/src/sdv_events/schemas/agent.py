"""Device facts: what an agent reports happened, on `sdv.evt.agent.<device_id>.<Type>`.

Agents publish these straight to JetStream `SDV_EVENTS` (they have no event store) as envelopes
with stream id `agent-<device_id>` and a `Nats-Msg-Id` built from (device, app, digest, desired
revision, type), so a redelivered or repeated report is dropped as a duplicate. A category of
its own: a device may publish its facts but can never forge a service's events.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from sdv_events.registry import event
from sdv_events.signal_catalog import MAX_SIGNALS, CatalogEntry, SignalPath


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


@event("agent.AppAlreadyCurrent")
class AppAlreadyCurrent(AppFact, frozen=True, kw_only=True):
    """The agent got a desired document (a new revision, naming `rollout_id`) for a digest it
    already runs and finds healthy: it changes nothing and reports this at once, so the rollout
    counts the device as a success with reason `already_current` instead of waiting for a fact
    that never comes. Also after a rollback left the device on that version."""

    since: str | None = None  # when the running instance became healthy (RFC 3339), if known


@event("agent.AppStaged")
class AppStaged(AppFact, frozen=True, kw_only=True):
    """Downloaded and verified, waiting for its activation (`DesiredApp.activation`): the switch
    itself no longer depends on the network."""


@event("agent.ActivationDeferred")
class ActivationDeferred(AppFact, frozen=True, kw_only=True):
    """The staged version is not switched to yet, and why: a gate that does not hold (with the
    signal and the value seen; no value: the databroker has none, or is unreachable), or a
    hold. Reported when the reason changes, not on every signal update. A deferral is not a
    failure: the rollout counts it against its activation deadline, not the device timeout."""

    reason: str
    gate: str | None = None
    signal: str | None = None
    value: float | bool | str | None = None
    held: bool = False


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


@event("agent.DesiredRefused")
class DesiredRefused(msgspec.Struct, frozen=True, kw_only=True):
    """The agent refused the document in its `sdv_desired` key and keeps running what it runs:
    not signed by the orchestrator key it pins, tampered with, naming another device, or an
    older revision written back (`sdv_events.desired_signing`). About a document, not an app,
    so not an `AppFact`: no rollout counts it."""

    device_id: str
    cause: str  # unsigned | unknown_key | bad_signature | undecodable | other_device | replayed
    reason: str
    revision: int | None = None  # the revision the document claims, when it could be read
    accepted_revision: int = 0  # the newest revision this agent accepted
    digest: str = ""  # sha256 of the refused bytes (the KV value)


@event("agent.SignalCatalogReported")
class SignalCatalogReported(msgspec.Struct, frozen=True, kw_only=True):
    """The signal catalogue the device's databroker serves (`sdv_events.signal_catalog`), sent
    when it changes (and once a day, so the bus's retention never loses it); the capabilities
    name it by `digest`."""

    device_id: str
    digest: str  # catalog_digest(signals)
    server: str = ""  # the databroker's name and version, as it says
    signals: Annotated[dict[SignalPath, CatalogEntry], msgspec.Meta(max_length=MAX_SIGNALS)]
