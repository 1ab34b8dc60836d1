"""Agents' facts → rollout reports, fed by the shared consumer runner (sdv_events.processing).
Each batch of outcome facts is grouped by rollout into one `ReportDevices` per rollout; the
decider ignores a device already counted and a fact about another version, so a redelivered
fact changes nothing. A report carries when the device observed it (the fact's `occurred_at`):
the decider judges it against the device's deadline by that time, not by when it arrives.
`AppStaged` and `ActivationDeferred` are reports too, though no outcome: the device waits to
switch, and is judged by its activation deadline from then on (domain/deferral.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import structlog

from sdv_events.envelope import Envelope
from sdv_events.ids import InvalidStreamId, stream_id
from sdv_events.schemas.agent import (
    ActivationDeferred,
    AppAlreadyCurrent,
    AppFact,
    AppFailed,
    AppHealthy,
    AppRolledBack,
    AppStaged,
    AppUninstalled,
)
from sdv_events.schemas.scheduling import Deferral
from sdv_orchestrator.application import Orchestrator
from sdv_orchestrator.domain.rollout_commands import Report

log = structlog.get_logger("sdv.orchestrator.facts")
SUBJECTS = ["sdv.evt.agent.*.AppHealthy", "sdv.evt.agent.*.AppFailed",
            "sdv.evt.agent.*.AppRolledBack", "sdv.evt.agent.*.AppAlreadyCurrent",
            "sdv.evt.agent.*.AppUninstalled", "sdv.evt.agent.*.AppStaged",
            "sdv.evt.agent.*.ActivationDeferred"]


def report_of(event: Envelope) -> Report | None:
    """The report a fact makes, naming the fact and when it happened (recorded in the rollout's
    own events), and the version it is about."""
    fact, at, fact_id = event.data, event.occurred_at, event.event_id
    match fact:
        case AppHealthy():
            return Report(fact.device_id, True, "", fact_id, at, fact.digest)
        case AppAlreadyCurrent():
            return Report(fact.device_id, True, "", fact_id, at, fact.digest, "already_current")
        case AppFailed(reason=reason, stage=stage):
            return Report(fact.device_id, False, f"{stage}: {reason}", fact_id, at, fact.digest)
        case AppRolledBack(reason=reason):
            return Report(fact.device_id, False, f"rolled back on the device: {reason}",
                          fact_id, at, fact.digest)
        case AppUninstalled():
            return Report(fact.device_id, True, "", fact_id, at, fact.digest, "uninstalled")
        case AppStaged():
            return Report(fact.device_id, False, "", fact_id, at, fact.digest, "staged")
        case ActivationDeferred():
            why = Deferral(reason=fact.reason, gate=fact.gate, signal=fact.signal, value=fact.value,
                           held=fact.held)
            return Report(fact.device_id, False, "", fact_id, at, fact.digest, "deferred", why)
    return None


class AgentFacts:
    """The processor the shared consumer runner feeds with agents' outcome facts (deduped by
    event id: devices' facts carry no store versions). A batch becomes one `ReportDevices` per
    rollout named by the facts."""

    name = "agent_facts"
    filter_subjects = tuple(SUBJECTS)
    start = "new"

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    async def handle(self, events: Sequence[Envelope]) -> None:
        by_rollout: dict[str, list[Report]] = defaultdict(list)
        for event in events:
            fact = event.data
            # A device may only speak for itself: the runner checked that the subject (which
            # its NATS permissions confine to its own id) names this stream; the body must agree.
            if not isinstance(fact, AppFact) or event.stream_id != f"agent-{fact.device_id}":
                continue
            report = report_of(event)
            if report is None or fact.rollout_id is None or not _names_a_rollout(fact.rollout_id):
                continue
            by_rollout[fact.rollout_id].append(report)
        for rollout_id, reports in by_rollout.items():
            if await self.orchestrator.state_or_none(rollout_id) is not None:
                await self.orchestrator.report(rollout_id, reports)


def _names_a_rollout(rollout_id: str) -> bool:
    """A device says what it likes: an id that cannot even name a rollout is not our error."""
    try:
        stream_id("rollout", rollout_id)
    except InvalidStreamId:
        log.debug("fact_names_an_invalid_rollout_id", rollout_id=rollout_id[:100])
        return False
    return True
