"""Everything the agent sends to the cloud goes through SQLite first and is flushed in order.

- Device facts: envelopes (stream `agent-<device_id>`, version from a local counter) in an
  outbox, published to JetStream with `Nats-Msg-Id` = the fact's stable id, sealed with this
  device's secret (`domain/facts.py`: no other device can pre-empt it); a row is marked sent
  only after JetStream acknowledged it, so a lost ack means a resend the server drops.
- Console lines: rows of the `logs` table, published to `sdv.logs.<device>.<app>.<stream>` with
  `Nats-Msg-Id` = the row id sealed with the device's secret: buffered on disk while
  disconnected, flushed on reconnect, nothing lost and nothing doubled (within SDV_LOGS' duplicate window).
- Reported state: the latest document only, written to KV `sdv_reported` (a plain publish on the
  key's subject, so the device needs no stream-info rights) whenever it changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import structlog

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_edge_agent.adapters.link import NatsLink
from sdv_edge_agent.adapters.store import AgentStore
from sdv_edge_agent.domain.admission import valid_app_name
from sdv_edge_agent.domain.facts import IdSealer, fact_event_id
from sdv_events.bus.tracing import current_trace, span
from sdv_events.codec import encode
from sdv_events.envelope import Envelope, TraceContext
from sdv_events.ids import stream_id
from sdv_events.provisioning import REPORTED_BUCKET
from sdv_events.registry import default_registry, short_name
from sdv_events.schemas.agent import AppFact, DesiredRefused, SignalCatalogReported
from sdv_events.schemas.deployment import ReportedState
from sdv_events.subjects import agent_fact_subject, logs_subject

log = structlog.get_logger("sdv.agent.publish")
ACK_TIMEOUT_S = 3.0
RETRY_S = 1.0


class _Flusher:
    """A task that flushes when woken, and retries while the link is down or acks time out."""

    def __init__(self, link: NatsLink, name: str) -> None:
        self.link = link
        self.name = name
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            if (task := asyncio.current_task()) is not None and task.cancelling():
                # asyncio.wait_for (3.11) or a library may have eaten the CancelledError.
                raise asyncio.CancelledError
            await self._wake.wait()
            self._wake.clear()
            await self.link.connected.wait()
            try:
                more = await self.flush()
            except Exception as exc:
                reraise_if_cancelling(exc)
                log.info("flush_failed", what=self.name, reason=f"{type(exc).__name__}: {exc}")
                more = True
                await asyncio.sleep(RETRY_S)
            if more:
                self._wake.set()

    async def flush(self) -> bool:
        raise NotImplementedError


class FactOutbox(_Flusher):
    def __init__(self, link: NatsLink, store: AgentStore, device_id: str, sealer: IdSealer,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        super().__init__(link, "facts")
        self.store = store
        self.device_id = device_id
        self.sealer = sealer
        self.stream = stream_id("agent", device_id)
        self.clock = clock
        # The trace an app's facts join: its desired entry's (the rollout's), set by the wiring.
        self.trace_of: Callable[[str], TraceContext] = lambda app: TraceContext()

    def emit(self, fact: AppFact | DesiredRefused | SignalCatalogReported, occurrence: int = 0,
             run: int | None = None) -> bool:
        """Record a fact for sending; False if this very fact was already recorded. A refused
        desired document is identified by its bytes and the revision the agent held, a signal
        catalogue by its digest."""
        type_name, schema_version = default_registry.describe(fact)
        what: dict[str, object]
        if isinstance(fact, AppFact):
            msg_id = self.sealer.fact_id(fact.app, fact.digest, fact.desired_revision, type_name,
                                         occurrence, run)
            correlation_id, what = fact.rollout_id, {"app": fact.app, "version": fact.version}
        elif isinstance(fact, SignalCatalogReported):
            msg_id = self.sealer.fact_id("", fact.digest, 0, type_name, occurrence)
            correlation_id, what = None, {"signals": len(fact.signals)}
        else:
            msg_id = self.sealer.fact_id("", fact.digest, fact.accepted_revision, type_name, occurrence)
            correlation_id, what = None, {"cause": fact.cause}
        if self.store.has_fact(msg_id):
            return False
        version = self.store.next_counter("fact_version")
        trace = self._traced(type_name, fact.app if isinstance(fact, AppFact) else "")
        envelope = Envelope(
            event_id=fact_event_id(msg_id), stream_id=self.stream, version=version, type=type_name,
            schema_version=schema_version, occurred_at=self.clock(), data=fact,
            actor=f"agent:{self.device_id}", correlation_id=correlation_id, trace=trace,
        )
        headers = {"Nats-Msg-Id": msg_id, "Sdv-Type": type_name, "Sdv-Stream": self.stream,
                   "Sdv-Version": str(version)}
        if trace.traceparent:
            headers["traceparent"] = trace.traceparent
        self.store.add_fact(msg_id, agent_fact_subject(self.device_id, type_name), headers,
                            encode(envelope))
        log.info("fact", type=type_name.split(".")[1], **what)
        self.wake()
        return True

    def _traced(self, type_name: str, app: str) -> TraceContext:
        """A span of the fact in its app's rollout trace, which the fact then carries (none
        when the app's desired entry has no trace)."""
        parent = self.trace_of(app)
        if not parent.traceparent:
            return TraceContext()
        with span(f"fact {short_name(type_name)}", parent=parent) as s:
            s.set_attribute("sdv.device_id", self.device_id)
            s.set_attribute("sdv.app", app)
            return current_trace()

    async def flush(self) -> bool:
        rows = self.store.unsent_facts(100)
        for row in rows:  # one at a time: facts of one device stay in order on the stream
            await self.link.js.publish(row.subject, row.payload, timeout=ACK_TIMEOUT_S, headers=row.headers)
            self.store.mark_fact_sent(row.seq)
        return len(rows) == 100


class LogShipper(_Flusher):
    def __init__(self, link: NatsLink, store: AgentStore, device_id: str, sealer: IdSealer,
                 batch: int = 500) -> None:
        super().__init__(link, "logs")
        self.store = store
        self.device_id = device_id
        self.sealer = sealer
        self.batch = batch

    async def flush(self) -> bool:
        rows = self.store.unsent_logs(self.batch)
        if not rows:
            return False
        bad = [row.id for row in rows if not valid_app_name(row.app)]
        if bad:  # no valid subject token: dropped once, never retried (admission keeps these out)
            log.error("log_lines_dropped_invalid_app", lines=len(bad))
            self.store.mark_logs_sent(bad)
            rows = [row for row in rows if valid_app_name(row.app)]
            if not rows:
                return True
        js = self.link.js
        futures = []
        for row in rows:
            headers = {"Nats-Msg-Id": self.sealer.log_id(row.id), "Sdv-Seq": str(row.id),
                       "Sdv-Ts": f"{row.ts:.6f}"}
            futures.append(await js.publish_async(
                logs_subject(self.device_id, row.app, row.stream), row.line.encode(), headers=headers,
            ))
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                await asyncio.gather(*futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        self.store.mark_logs_sent([row.id for row in rows])
        return len(rows) == self.batch


class ReportedWriter(_Flusher):
    def __init__(self, link: NatsLink, device_id: str, build: Callable[[], ReportedState]) -> None:
        super().__init__(link, "reported")
        self.subject = f"$KV.{REPORTED_BUCKET}.{device_id}"
        self.build = build
        self.last: bytes | None = None

    async def flush(self) -> bool:
        await asyncio.sleep(0.05)  # coalesce a burst of changes into one write
        self._wake.clear()
        payload = msgspec.json.encode(self.build())
        await self.link.js.publish(self.subject, payload, timeout=ACK_TIMEOUT_S)
        self.last = payload
        return False


async def run_all(*flushers: _Flusher) -> None:
    async with asyncio.TaskGroup() as group:
        for flusher in flushers:
            group.create_task(flusher.run())
            flusher.wake()


