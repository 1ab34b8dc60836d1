"""Agents' facts → rollout reports, fed by the shared consumer runner (sdv_events.processing).
Each batch of outcome facts is grouped by rollout into one `ReportDevices` per rollout; the
decider ignores a device already counted, so a redelivered fact changes nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import structlog

from sdv_events.envelope import Envelope
from sdv_events.ids import InvalidStreamId
from sdv_events.schemas.agent import AppFact, AppFailed, AppHealthy, AppRolledBack
from sdv_orchestrator.application import Orchestrator
from sdv_orchestrator.domain.rollout import Report

log = structlog.get_logger("sdv.orchestrator.facts")
SUBJECTS = ["sdv.evt.agent.*.AppHealthy", "sdv.evt.agent.*.AppFailed", "sdv.evt.agent.*.AppRolledBack"]


def report_of(event: Envelope) -> Report | None:
    """The report a fact makes, naming the fact (recorded in the rollout's own events)."""
    fact, at = event.data, event.occurred_at
    match fact:
        case AppHealthy():
            return Report(fact.device_id, True, "", event.event_id, at)
        case AppFailed(reason=reason, stage=stage):
            return Report(fact.device_id, False, f"{stage}: {reason}", event.event_id, at)
        case AppRolledBack(reason=reason):
            return Report(fact.device_id, False, f"rolled back on the device: {reason}",
                          event.event_id, at)
    return None


class AgentFacts:
    """The processor the shared consumer runner feeds with agents' outcome facts (deduped by
    event id: devices' facts carry no store versions). A batch becomes one `ReportDevices` per
    rollout; the decider ignores a device already counted, so a repeated fact changes nothing."""

    name = "agent_facts"
    filter_subjects = tuple(SUBJECTS)
    start = "new"

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    async def handle(self, events: Sequence[Envelope]) -> None:
        by_rollout: dict[str, list[Report]] = defaultdict(list)
        # A rollout's package does not change: look each rollout up once per batch, not per fact.
        digests: dict[str, str | None] = {}
        for event in events:
            fact = event.data
            # A device may only speak for itself: the runner checked that the subject (which
            # its NATS permissions confine to its own id) names this stream; the body must agree.
            if not isinstance(fact, AppFact) or event.stream_id != f"agent-{fact.device_id}":
                continue
            report = report_of(event)
            if report is None or fact.rollout_id is None:
                continue
            if fact.rollout_id not in digests:
                digests[fact.rollout_id] = await self._digest(fact.rollout_id)
            if digests[fact.rollout_id] != fact.digest:
                continue  # about another version (e.g. the old one healthy again after a rollback)
            by_rollout[fact.rollout_id].append(report)
        for rollout_id, reports in by_rollout.items():
            await self.orchestrator.report(rollout_id, reports)

    async def _digest(self, rollout_id: str) -> str | None:
        """The digest the rollout deploys; None for a rollout unknown here — including an id
        that cannot even name one (a device says what it likes: its fact is not our error)."""
        try:
            state = await self.orchestrator.state_or_none(rollout_id)
        except InvalidStreamId:
            log.debug("fact_names_an_invalid_rollout_id", rollout_id=rollout_id[:100])
            return None
        created = state.created if state is not None else None
        return created.package.digest if created is not None else None
