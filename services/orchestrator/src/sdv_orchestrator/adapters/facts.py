"""Agents' facts → rollout reports. A durable pull consumer on the outcome facts; each batch is
grouped by rollout into one `ReportDevices` per rollout, then acked. Delivery is at least
once; the decider ignores a device already counted, so a redelivered fact changes nothing."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sdv_events.aio import sleep_or_stop
from sdv_events.bus.deadletter import dead_letter
from sdv_events.codec import decode_envelope
from sdv_events.errors import DecodeError
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.schemas.agent import AppFact, AppFailed, AppHealthy, AppRolledBack
from sdv_orchestrator.application import Orchestrator
from sdv_orchestrator.domain.rollout import Report

log = structlog.get_logger("sdv.orchestrator.facts")
DURABLE = "orchestrator_agent_facts"
# Facts delivered to an incarnation that stopped or died before acking them (a pull that
# was answered as it stopped, a batch in hand at a kill) come back only after this long; with
# 60 s a restarted orchestrator let those devices time out. Redelivering a batch that is still
# being handled is harmless: the decider ignores a device already counted.
ACK_WAIT_S = 5.0
SUBJECTS = ["sdv.evt.agent.*.AppHealthy", "sdv.evt.agent.*.AppFailed", "sdv.evt.agent.*.AppRolledBack"]


def report_of(fact: AppFact) -> Report | None:
    match fact:
        case AppHealthy():
            return Report(fact.device_id, True)
        case AppFailed(reason=reason, stage=stage):
            return Report(fact.device_id, False, f"{stage}: {reason}")
        case AppRolledBack(reason=reason):
            return Report(fact.device_id, False, f"rolled back on the device: {reason}")
    return None


async def consume_facts(orchestrator: Orchestrator, js: JetStreamContext, stop: asyncio.Event,
                        batch: int = 512) -> None:
    await js.add_consumer(EVENTS_STREAM, ConsumerConfig(
        durable_name=DURABLE, deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.EXPLICIT,
        filter_subjects=SUBJECTS, ack_wait=ACK_WAIT_S, max_ack_pending=batch * 8,
    ))
    sub = await js.pull_subscribe_bind(DURABLE, EVENTS_STREAM)
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=0.5)
            except TimeoutError:
                continue
            try:
                await handle(orchestrator, js, msgs)
            except Exception:
                log.exception("facts_batch_failed", size=len(msgs))  # redelivered after ack_wait
                await sleep_or_stop(stop, 1.0)
                continue
            for msg in msgs:
                await msg.ack()
    finally:
        await sub.unsubscribe()


async def handle(orchestrator: Orchestrator, js: JetStreamContext, msgs: list) -> None:  # type: ignore[type-arg]
    by_rollout: dict[str, list[Report]] = defaultdict(list)
    # A rollout's package does not change: look each rollout up once per batch, not per fact.
    digests: dict[str, str | None] = {}
    for msg in msgs:
        try:
            envelope = decode_envelope(msg.data)
        except DecodeError as err:
            await dead_letter(js, subject=msg.subject, payload=msg.data, error=err, consumer=DURABLE,
                              headers=msg.headers)
            continue
        fact = envelope.data
        # A device may only speak for itself: the subject carries its id (its NATS permissions
        # allow no other), the body must agree.
        if not isinstance(fact, AppFact) or msg.subject.split(".")[3] != fact.device_id:
            continue
        report = report_of(fact)
        if report is None or fact.rollout_id is None:
            continue
        if fact.rollout_id not in digests:
            state = await orchestrator.state_or_none(fact.rollout_id)
            created = state.created if state is not None else None
            digests[fact.rollout_id] = created.package.digest if created is not None else None
        if digests[fact.rollout_id] != fact.digest:
            continue  # about another version (e.g. the old one healthy again after a rollback)
        by_rollout[fact.rollout_id].append(report)
    for rollout_id, reports in by_rollout.items():
        await orchestrator.report(rollout_id, reports)


async def tick_active(orchestrator: Orchestrator, stop: asyncio.Event, every_s: float = 1.0) -> None:
    """Timeouts and soak times advance on the clock, not only on reports."""
    while not stop.is_set():
        try:
            for rollout_id in await orchestrator.active():
                await orchestrator.tick(rollout_id)
        except Exception:
            log.exception("tick_failed")
        await sleep_or_stop(stop, every_s)
