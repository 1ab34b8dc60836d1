"""What an app supervisor's parts share: the app's state (its record, its instances, its restart
and retry bookkeeping), its inbox, and the bookkeeping every step does — a lifecycle move, saving
the record, emitting a fact. The steps themselves are functions of an `AppCore` in the modules
beside this one (installing, instances, upgrade, outcomes, app_ops); what they use of the agent is
the narrow `AppHost` port (ports.py), and the time they read is the injected `Clock`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import structlog

from sdv_edge_agent.adapters.packages import InstallError
from sdv_edge_agent.app_inbox import Instance, Message
from sdv_edge_agent.domain.attribution import already_current
from sdv_edge_agent.domain.lifecycle import AppState, transition
from sdv_edge_agent.domain.reconcile import LocalApp
from sdv_edge_agent.domain.records import AppRecord
from sdv_edge_agent.ports import AppHost, Clock
from sdv_events.schemas.agent import AppAlreadyCurrent, AppFact, AppFailed
from sdv_events.schemas.deployment import DesiredApp
from sdv_events.schemas.packages import PackageInfo

S = AppState
log = structlog.get_logger("sdv.agent.app")


class AppCore:
    def __init__(self, agent: AppHost, record: AppRecord, clock: Clock) -> None:
        self.agent = agent
        self.clock = clock
        self.record = record
        self.name = record.name
        self.instance: Instance | None = None
        self.candidate: Instance | None = None  # a hot-swap candidate, beside `instance`
        self.restart_generation = 0
        self.restart_pending = False
        self.install_not_before = 0.0  # after a transient download failure: wait, then retry
        self.install_retries = 0
        # A new rollout's id until a fact answers it: reconcile reports it already current or
        # a step's facts do.
        self.unanswered: str | None = None
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.log = log.bind(app=self.name)

    def post(self, message: Message) -> None:
        self.inbox.put_nowait(message)

    def move(self, target: AppState) -> None:
        self.record.state = transition(self.name, self.record.state, target)
        shown = self.record.shown
        self.log.info("state", state=target.value, version=shown.version if shown else None)

    def save(self) -> None:
        self.agent.store.save_app(self.record)
        self.agent.changed()

    def emit(self, cls: type[AppFact], package: PackageInfo | None = None, run: int | None = None,
              **fields: Any) -> None:
        """A fact about `package` (default: the version shown), naming the cause the record
        adopted (domain/attribution.py); `run`: the run it is about (its identity)."""
        package = package or self.record.shown
        if package is None:
            return
        fact = cls(
            device_id=self.agent.device_id, app=self.name, version=package.version,
            digest=package.digest, desired_revision=self.record.revision or self.agent.revision,
            rollout_id=self.record.rollout_id, **fields,
        )
        self.agent.facts.emit(fact, run)

    def keep_versions(self, *packages: PackageInfo | None) -> None:
        """Remove every version of the app from disk but these."""
        self.agent.prune_versions(self.name, [p for p in packages if p is not None])

    def adopt_cause(self) -> None:
        """Before acting on a desired entry: its facts name its rollout from now on."""
        cause = self.agent.cause_of(self.name)
        if cause is None or (cause.rollout_id, cause.revision) == self.record.cause:
            return
        if cause.rollout_id not in (None, self.record.rollout_id):
            self.unanswered = cause.rollout_id
        self.record.rollout_id, self.record.revision = cause.rollout_id, cause.revision
        self.save()

    def answer_if_current(self, desired: DesiredApp | None, local: LocalApp) -> None:
        """A new rollout of the version that runs here, healthy: it is answered at once."""
        if self.unanswered is None or desired is None:
            return
        self.unanswered = None
        if already_current(desired, local, self.record.healthy):
            at = self.record.healthy_at
            self.emit(AppAlreadyCurrent, since=datetime.fromtimestamp(at, UTC).isoformat() if at else None)
            self.log.info("already_current", rollout_id=self.record.rollout_id)

    def adopt_config(self) -> None:
        desired = self.agent.desired_app(self.name)
        if desired is not None:
            self.record.config = dict(desired.config)

    def failed_here(self, package: PackageInfo) -> None:
        """This version is not tried again for the desired entry's rollout."""
        self.record.failed_digest = package.digest
        self.record.failed_rollout = self.agent.desired_rollout(self.name)

    def refuse(self, package: PackageInfo, err: InstallError | str, stage: str,
                run: int | None = None) -> None:
        reason = err.message if isinstance(err, InstallError) else err
        self.failed_here(package)
        self.record.last_error = f"{package.version}: {stage}: {reason}"
        self.emit(AppFailed, package, run, reason=reason, stage=stage)
        self.log.warning("version_refused", version=package.version, stage=stage, reason=reason)
