"""The one consumer runner: every projection, policy and fact handler of the suite runs in it.

The rules, in one place:
- fetch from a durable JetStream pull consumer, resumed from the checkpoint (the stream
  sequence, kept with the stream's creation time: a recreated stream is read from its start);
- decode; a message that is not an event at all is dead-lettered (`SDV_DLQ`, reason in headers);
- dedupe by `(stream_id, version)` — or by `(stream_id, event_id)` for devices' facts, never by
  an id alone (a device could reuse another's) — whatever the JetStream sequence, so a duplicate
  published after JetStream's dedupe window changes nothing; facts handled are forgotten after
  `fact_retention_s`, pruned on a timer while the runner leads, a bounded number per round;
- the same `(stream_id, version)` under another event id than the one handled is a divergent
  history (its owner was restored from an older backup and wrote on): the consumer stops there —
  no ack, no checkpoint — and health and logs say "divergent history: …" until an operator
  decides (rebuild the read model, or fix the ledger); it looks again every `blocked_recheck_s`;
- a gap or a regression in a stream's versions is healed from the owning store before the
  message is applied: events are never applied out of order (planning.py);
- an event of a type this build does not know, in a services' category (a newer writer in a
  rolling deploy), stops the consumer there: no ack, no checkpoint past it; health says so until
  a build that knows it restarts the consumer, which then goes on from that event;
- a handler that raises is judged by `failures.classify` (read the rules there): a permanent
  failure (the event's own fault) is parked at once (dead letter with the reason
  `apply_failed`), counted, and processing goes on; a transient one (a peer or a connection
  away) is retried with capped backoff for as long as it lasts, health saying "waiting on
  <what>: <error>"; anything else is retried `max_attempts` times with backoff, then parked.
  One log line per failure, no traceback dump;
- health turns red when the oldest message not yet handled is older than `max_lag_s` (lag as
  age, not only as a count), counted from when this runner took the lead at the earliest;
- a projection's rows, the stream versions and the checkpoint commit in one transaction per
  fetched batch, with no network I/O in it and no savepoint per event; an event that fails
  undoes the batch, and the events before it commit without it (found by applying one by one,
  each under a savepoint, when the projection wrote the batch set-wise: `AppliesBatches`);
  its side effects run after the commit (`WithSideEffects`);
- a consumer of several categories reads one JetStream subject covering them and skips the
  other categories' messages by subject, unread (categories.py says why);
- acks after the commit, one per commit (the consumer acks all below the message acked); an
  ack that fails (NATS away) is logged and the messages come again, recognised as done;
- the next batch is fetched while one is handled, and the stream versions handled are kept in
  memory while the runner leads (emptied whenever a commit may have gone otherwise);
- one runner per consumer leads (a PostgreSQL advisory lock), replicas stand by; a transient
  failure outside a handler (PostgreSQL or NATS away while fetching or recording) is waited out
  the same way, in the runner (a connection lost while committing: by leading again, from what
  the ledger says was committed); other errors it cannot handle escape to the service's
  Supervisor, which restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, cast

import asyncpg
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from sdv_events.aio import sleep_or_stop
from sdv_events.bus.deadletter import dead_letter, park
from sdv_events.bus.tracing import span
from sdv_events.codec import encode
from sdv_events.envelope import Envelope
from sdv_events.errors import DecodeError
from sdv_events.processing.categories import SubjectSet, consumer_subjects, is_versioned
from sdv_events.processing.failures import cause, classify, dependency, waiting_on, where
from sdv_events.processing.ledger import FactKey, Handled, KnownVersions, Ledger
from sdv_events.processing.planning import Blocked, GapNotHealed, Planner, Step
from sdv_events.processing.processor import (
    AppliesBatches,
    Processor,
    Projection,
    WithSideEffects,
    category_of_subject,
    start_of,
)
from sdv_events.processing.pull import Puller
from sdv_events.processing.rebuild import Rebuilt, rebuild_from_store
from sdv_events.processing.sources import StreamSource
from sdv_events.processing.transactions import CommitOutcomeUnknown, lost, transaction
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.registry import EventRegistry, default_registry
from sdv_events.store.postgres import EventStore, pooled_session
from sdv_events.subjects import event_subject
from sdv_events.supervision import Status

log = structlog.get_logger("sdv.consumer")
Outcome = Literal["standby", "caught_up", "blocked", "gap", "stopped"]
# Devices' fact ids are remembered this long: far past any JetStream redelivery.
EVENT_ID_RETENTION_S = 7 * 86_400.0
# Streams whose last version a leader keeps in memory, at most (then it starts over).
MAX_HANDLED_CACHED = 200_000
# Health turns red when the oldest message not yet handled is older than this.
DEFAULT_MAX_LAG_S = 30.0


@dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    parked: int = 0
    healed: int = 0
    retries: int = 0
    effect_errors: int = 0
    pruned: int = 0
    last_error: str | None = None
    # "waiting on <what>: <error>" while a transient failure lasts.
    waiting: str | None = None
    blocked: Blocked | None = None
    gap: str | None = None
    state: str = "starting"
    extra: dict[str, int] = field(default_factory=dict)


def _same_stream(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs((a - b).total_seconds()) < 0.001


class ConsumerRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        js: JetStreamContext,
        consumer: Processor | Projection,
        *,
        source: StreamSource | None = None,
        registry: EventRegistry = default_registry,
        stream: str = EVENTS_STREAM,
        batch_size: int = 256,
        fetch_timeout_s: float = 0.5,
        ack_wait_s: float = 60.0,
        max_attempts: int = 5,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        max_lag_s: float | None = None,
        fact_retention_s: float = EVENT_ID_RETENTION_S,
        prune_every_s: float = 600.0,
        prune_batch: int = 5000,
        blocked_recheck_s: float = 30.0,
        build_from: EventStore | None = None,
        service: str | None = None,
        nc: NatsClient | None = None,
    ) -> None:
        self.pool = pool
        # Where a projection without a recorded position is first built from (rebuild.py);
        # `service` and `nc` reach the owners of categories the service does not hold.
        self.build_from = build_from
        self.service = service
        self.nc = nc
        self.schema = schema
        self.js = js
        self.consumer = consumer
        # A projection applies inside the runner's transaction; a processor acts outside one.
        self.transactional = callable(getattr(consumer, "apply", None))
        # Devices' facts are deduped by event id: only then is the id ledger worth a query.
        self._by_id = any(c == "*" or not is_versioned(c)
                          for c in _categories(consumer.filter_subjects))
        self.source = source
        self.registry = registry
        self.stream = stream
        self.batch_size = batch_size
        self.fetch_timeout_s = fetch_timeout_s
        self.ack_wait_s = ack_wait_s
        self.max_attempts = max_attempts
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        # Unless chosen here, a service's runner gets its `SDV_CONSUMER_MAX_LAG_S` (run_consumer).
        self.max_lag_chosen = max_lag_s is not None
        self.max_lag_s = DEFAULT_MAX_LAG_S if max_lag_s is None else max_lag_s
        self.fact_retention_s = fact_retention_s
        self.prune_every_s = prune_every_s
        self.prune_batch = prune_batch
        self.blocked_recheck_s = blocked_recheck_s
        self.name = consumer.name
        self.durable = f"c_{schema}_{consumer.name}"
        self.ledger = Ledger(schema, consumer.name)
        self.stats = ConsumerStats()
        self.log = log.bind(consumer=self.name, schema=schema)
        self._stop = asyncio.Event()
        self._since: datetime | None = None
        self._leading = False
        self._lead_started = 0.0  # wall clock, when this runner took the lead
        # Wall clock of the oldest message not yet handled (None: nothing in hand).
        self._oldest_at: float | None = None
        self._batch_times: dict[int, float] = {}
        self._next_prune = 0.0
        # The last version handled per stream, as this leader committed or read it: spares the
        # ledger query each batch (which PostgreSQL plans as a scan of the consumer's rows while
        # its statistics are young). Trusted only while this runner leads and every commit went
        # through: emptied when it takes the lead, after a failure, after a rebuild's swap.
        self._handled = KnownVersions(MAX_HANDLED_CACHED)
        # Held while a batch is handled; a rebuild in this process takes it to pause the feed.
        self.batch_lock = asyncio.Lock()
        # What JetStream is asked for: one subject, covering several if need be (categories.py).
        self.subjects = SubjectSet(consumer_subjects(consumer.filter_subjects))
        self._planner = Planner(self.name, tuple(consumer.filter_subjects), registry, source,
                                start_of(consumer), self._dead_letter,
                                reads=self.subjects.reads if len(self.subjects.subjects) > 1 else None)

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Feed the consumer until `stop` (spawned under the service's Supervisor). While
        another runner leads, stand by; stopped at an unreadable event, wait for an upgrade."""
        self._stop = stop
        gap_failures = waits = 0
        while not stop.is_set():
            try:
                outcome = await self._lead(stop, until_caught_up=False)
            except Exception as exc:
                if classify(exc) != "transient" or stop.is_set():
                    raise  # to the Supervisor, which restarts the runner
                waits += 1
                self._wait(exc, waits, self.log)
                await sleep_or_stop(stop, self._backoff(waits))
                continue
            waits = 0
            if outcome == "standby":
                self.stats.state = "standby"
                self._oldest_at = None  # the leader elsewhere reports the lag
                await sleep_or_stop(stop, 1.0)
            elif outcome == "blocked":
                blocked = self.stats.blocked
                if blocked is not None and blocked.kind == "divergent_history":
                    await sleep_or_stop(stop, self.blocked_recheck_s)  # an operator may fix it
                else:
                    await stop.wait()  # leadership released: an upgraded replica may take over
            elif outcome == "gap":
                gap_failures += 1
                await sleep_or_stop(stop, self._backoff(gap_failures))

    async def catch_up(self, stop: asyncio.Event | None = None) -> Outcome:
        """Feed until nothing is pending (tests, tools); `standby` if another runner leads."""
        self._stop = stop or asyncio.Event()
        return await self._lead(self._stop, until_caught_up=True)

    async def status(self) -> Status:
        """The health probe: stopped at an event, waiting on a gap, or fine, with figures."""
        s = self.stats
        detail: dict[str, int | float | str] = {
            "applied": s.applied, "duplicates": s.duplicates, "dead_lettered": s.dead_lettered,
            "parked": s.parked, "healed": s.healed, "state": s.state,
        }
        if self._leading:
            with contextlib.suppress(Exception):
                detail["pending"] = await self.pending()
        age = self.oldest_unprocessed_age_s()
        if age is not None:
            detail["oldest_unprocessed_age_s"] = round(age, 3)
        if s.blocked is not None:
            return Status(False, s.blocked.summary, detail)
        if s.gap is not None:
            return Status(False, f"waiting to heal a gap: {s.gap}", detail)
        if s.waiting is not None:
            return Status(False, s.waiting, detail)
        if age is not None and age > self.max_lag_s:
            return Status(False, f"lagging: the oldest message not yet handled is {age:.1f} s "
                                 f"old (limit {self.max_lag_s:g} s)", detail)
        return Status(True, "", detail)

    def oldest_unprocessed_age_s(self) -> float | None:
        """How long the oldest message in hand has waited (since its publication, or since this
        runner took the lead if later); None when nothing is in hand."""
        oldest = self._oldest_at
        return None if oldest is None else max(0.0, time.time() - oldest)

    @property
    def leading(self) -> bool:
        return self._leading

    async def rebuild(self, source: Literal["store"] = "store", *, store: EventStore,
                      service: str | None = None, nc: NatsClient | None = None) -> Rebuilt:
        """Rebuild the projection from PostgreSQL alone (see rebuild.py) and swap it in."""
        if source != "store":
            raise ValueError(f"unknown rebuild source {source!r}")
        await self.ledger.create(self.pool)
        return await rebuild_from_store(self, store, service=service, nc=nc)

    async def pending(self) -> int:
        info = await self.js.consumer_info(self.stream, self.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def _lead(self, stop: asyncio.Event, until_caught_up: bool) -> Outcome:
        async with pooled_session(self.pool) as lock_conn:
            if not await self.try_lock(lock_conn):
                return "standby"
            self._leading = True
            self._lead_started = time.time()
            self._next_prune = 0.0
            self.stats.state = "leading"
            try:
                return await self._feed(stop, until_caught_up)
            finally:
                self._leading = False

    async def try_lock(self, conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))",
            f"sdv_consumer:{self.schema}", self.name))

    async def _feed(self, stop: asyncio.Event, until_caught_up: bool) -> Outcome:
        self.forget_handled()  # another runner may have led meanwhile
        await self.ledger.create(self.pool)
        await self._after_commit()  # effects a crash left behind
        await self._open_consumer()
        # The connection JetStream requests go through (nats-py keeps it on the context).
        sub = await Puller(self.nc or self.js._nc, self.stream, self.durable).start()
        self.stats.waiting = None
        # The next batch is on its way while one is handled: JetStream delivers it (and the
        # client parses it) while PostgreSQL applies the one in hand. Never more than one ahead;
        # what is in hand when the runner stops is not acked and comes again (from the
        # checkpoint, at the next lead).
        fetching: asyncio.Future[list[Msg]] | None = None
        try:
            while not stop.is_set():
                if self._by_id and time.monotonic() >= self._next_prune:
                    await self._prune()
                if fetching is None:
                    fetching = asyncio.ensure_future(sub.fetch(self.batch_size,
                                                               timeout=self.fetch_timeout_s))
                try:
                    msgs = await fetching
                except TimeoutError:
                    fetching = None
                    self._oldest_at = None  # nothing in hand: caught up
                    if self.stats.effect_errors:
                        await self._after_commit()
                    if until_caught_up and await self.pending() == 0:
                        return "caught_up"
                    continue
                fetching = None
                if not msgs:
                    continue
                fetching = asyncio.ensure_future(sub.fetch(self.batch_size,
                                                           timeout=self.fetch_timeout_s))
                self._batch_times = {m.metadata.sequence.stream: m.metadata.timestamp.timestamp()
                                     for m in msgs}
                self._mark_oldest(msgs[0].metadata.sequence.stream)
                async with self.batch_lock:
                    outcome = await self._handle_batch(msgs)
                if outcome is not None:
                    return outcome
                self._oldest_at = None
            return "stopped"
        finally:
            if fetching is not None:  # dropped unacked; its outcome is of no interest
                fetching.add_done_callback(lambda f: f.cancelled() or f.exception())
                fetching.cancel()
            with contextlib.suppress(Exception):
                await sub.stop()

    async def _open_consumer(self) -> None:
        """(Re)create the durable at the checkpoint: the checkpoint, not JetStream's ack state,
        says where to resume (a batch handled but not acked before a crash is not redone)."""
        position = await self.ledger.position(self.pool)
        if position is None and self.transactional and self.build_from is not None:
            # A projection with no recorded position is built from PostgreSQL first: its first
            # build does not depend on what JetStream still retains, and a read model an older
            # build left behind (its own checkpoint, not this ledger) is replaced, not fed the
            # same events a second time. The rebuild records where the bus takes over.
            built = await rebuild_from_store(self, self.build_from, service=self.service,
                                             nc=self.nc)
            self.log.info("built_from_store", events=built.events, applied=built.applied,
                          checkpoint=built.checkpoint)
            position = await self.ledger.position(self.pool)
        info = await self.js.stream_info(self.stream)
        created, last_seq = info.created, int(info.state.last_seq)
        if position is None:
            start_seq = last_seq + 1 if start_of(self.consumer) == "new" else 1
            await self.ledger.set_position(self.pool, start_seq - 1, created)
        elif not _same_stream(position.stream_created, created):
            self.log.warning("stream_recreated_reading_from_its_start", stream=self.stream,
                             checkpoint=position.seq)
            start_seq = 1
            await self.ledger.set_position(self.pool, 0, created)
        else:
            start_seq = position.seq + 1
        position = await self.ledger.position(self.pool)
        self._since = position.since if position is not None else None
        self.stats.parked = position.parked if position is not None else 0
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.stream, self.durable)
        subject = self.subjects.jetstream_filter
        await self.js.add_consumer(self.stream, ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start_seq,
            ack_policy=AckPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_ack_pending=self.batch_size * 4,
            filter_subject=subject,
        ))
        self.log.info("consumer_started", start_seq=start_seq, subject=subject,
                      reads=self.subjects.subjects)

    # ------------------------------------------------------------------ one batch

    async def _handle_batch(self, msgs: Sequence[Msg]) -> Outcome | None:
        try:
            plan = await self._planner.plan(msgs, self._load_ledger, self._since)
        except GapNotHealed as err:
            self.stats.gap = str(err)
            self.log.error("gap_not_healed", stream_id=err.stream_id, expected=err.expected,
                           version=err.got, error=str(err))
            return "gap"
        self.stats.gap = None
        if plan.blocked is None:
            self.stats.blocked = None  # whatever stopped it before was resolved
        self.stats.duplicates += plan.duplicates
        self.stats.dead_lettered += plan.dead_letters
        self.stats.healed += plan.healed
        if plan.healed:
            self.log.warning("gap_healed_from_owning_store", events=plan.healed)
        done = await self._execute(plan.steps)
        if done < len(plan.steps):
            return "stopped"  # stopping while retrying: the rest is redelivered
        if plan.blocked is not None:
            b = plan.blocked
            self.stats.blocked = b
            self.stats.state = "blocked"
            self.log.error(f"consumer_stopped_{b.kind}", stream_id=b.stream_id,
                           version=b.version, type=b.type, subject=b.msg.subject, reason=b.reason)
            return "blocked"
        return None

    async def _execute(self, steps: list[Step]) -> int:
        """Run the steps in order; returns how many are done (all unless stopped)."""
        i = 0
        while i < len(steps):
            self._mark_oldest(steps[i].seq)
            try:
                done, error = await self._attempt(steps[i:])
            except Exception as exc:  # the bookkeeping failed (PostgreSQL away?)
                if isinstance(exc, CommitOutcomeUnknown) or classify(exc) != "transient":
                    raise
                done, error = 0, exc
            i += done
            if i == len(steps):
                break
            if not await self._retry_or_park(steps[i], error):
                return i
            i += 1
        self.stats.waiting = None
        return i

    async def _attempt(self, steps: list[Step]) -> tuple[int, BaseException | None]:
        """Hand the steps over and record them; on the first failure, record those before it.
        Returns (steps done, the failure)."""
        try:
            done, error = await self._attempt_steps(steps)
        except BaseException:
            self.forget_handled()  # a commit may have gone through unseen: ask the ledger again
            raise
        if error is not None:
            self.forget_handled()
        return done, error

    async def _attempt_steps(self, steps: list[Step]) -> tuple[int, BaseException | None]:
        if self.transactional:
            return await self._apply(steps)
        done: int = len(steps)
        error: BaseException | None = None
        processor = cast(Processor, self.consumer)
        events = [s.event for s in steps if s.event is not None]
        try:
            if events:
                # One span for the batch, a child of its first event's trace, linked to
                # the others': what a processor sends or appends continues that trace.
                with span(f"{self.name} handle {events[0].type}", parent=events[0].trace,
                          links=[e.trace for e in events[1:]]):
                    await processor.handle(events)
        except Exception as exc:
            if len(events) > 1:  # find the one that fails: hand them over one at a time
                return await self._attempt_each(steps)
            done = next(n for n, s in enumerate(steps) if s.event is not None)
            error = exc
        async with transaction(self.pool) as conn:
            await self._record(conn, steps[:done])
        await self._after_done(steps[:done])
        return done, error

    async def _apply(self, steps: list[Step]) -> tuple[int, BaseException | None]:
        """A projection's steps and their bookkeeping in one transaction, with no savepoint per
        event (two of every three round trips to PostgreSQL, when each event had one). When an
        event fails, the transaction is undone and the steps before it commit without it: the
        runner knows which one failed when it applied them one by one; after a projection's
        `apply_batch` failed, it applies them again one by one, each under a savepoint, to
        find out (`_isolate`)."""
        try:
            await self._commit(steps)
        except _FailedAt as failed:
            if failed.index == 0:
                return 0, failed.error
            done, error = await self._apply(steps[:failed.index])
            return (done, error) if done < failed.index else (done, failed.error)
        except _BatchFailed:
            return await self._isolate(steps)
        await self._after_done(steps)
        return len(steps), None

    async def _commit(self, steps: list[Step]) -> None:
        projection = cast(Projection, self.consumer)
        events = [(n, s.event) for n, s in enumerate(steps) if s.event is not None]
        async with transaction(self.pool) as conn:
            if len(events) > 1 and isinstance(projection, AppliesBatches):
                batch = [e for _, e in events]
                with span(f"{self.name} apply {batch[0].type}", parent=batch[0].trace,
                          links=[e.trace for e in batch[1:]]):
                    try:
                        await projection.apply_batch(conn, batch)
                    except Exception as exc:
                        raise _BatchFailed(exc) from exc
            else:
                for n, event in events:
                    try:
                        with span(f"{self.name} apply {event.type}", parent=event.trace):
                            await projection.apply(conn, event)
                    except Exception as exc:
                        raise _FailedAt(n, exc) from exc
            await self._record(conn, steps)

    async def _isolate(self, steps: list[Step]) -> tuple[int, BaseException | None]:
        """Each event under its own savepoint, to find the one that fails: those before it
        commit, with their bookkeeping."""
        done: int = len(steps)
        error: BaseException | None = None
        projection = cast(Projection, self.consumer)
        async with transaction(self.pool) as conn:
            for n, step in enumerate(steps):
                if step.event is None:
                    continue
                try:
                    with span(f"{self.name} apply {step.event.type}", parent=step.event.trace):
                        async with conn.transaction():  # a savepoint: undo this event alone
                            await projection.apply(conn, step.event)
                except Exception as exc:
                    if lost(conn):
                        raise  # not the event's fault: the connection is gone
                    done, error = n, exc
                    break
            await self._record(conn, steps[:done])
        await self._after_done(steps[:done])
        return done, error

    async def _attempt_each(self, steps: list[Step]) -> tuple[int, BaseException | None]:
        done = 0
        while done < len(steps):
            n, error = await self._attempt(steps[done:done + 1])
            done += n
            if error is not None:
                return done, error
        return done, None

    async def _retry_or_park(self, step: Step, error: BaseException | None) -> bool:
        """Retry a failing step alone: while its failure is transient, for as long as it lasts;
        an unknown failure `max_attempts` times; a permanent one not at all. Then park it.
        False when the runner was stopped meanwhile."""
        event = step.event
        bound = self.log.bind(seq=step.seq) if event is None else self.log.bind(
            stream_id=event.stream_id, version=event.version, type=event.type,
            event_id=str(event.event_id))
        attempts = waits = 0
        while True:
            kind = classify(error) if error is not None else "unknown"
            if event is None and kind != "transient":  # only the bookkeeping failed
                raise error if error is not None else RuntimeError("bookkeeping failed")
            if kind == "transient":
                waits += 1
                delay = self._backoff(waits)
                self._wait(error, waits, bound, delay)
            else:
                attempts += 1
                if kind == "permanent" or attempts >= self.max_attempts:
                    assert event is not None
                    await self._park(step, event, error, kind, attempts, bound)
                    return True
                delay = self._backoff(attempts)
                bound.warning("handler_failed_retrying", attempt=attempts,
                              retry_in_s=round(delay, 2), error=cause(error), where=where(error))
            self.stats.retries += 1
            await sleep_or_stop(self._stop, delay)
            if self._stop.is_set():
                return False
            try:
                done, error = await self._attempt([step])
            except Exception as exc:
                if isinstance(exc, CommitOutcomeUnknown) or classify(exc) != "transient":
                    raise
                done, error = 0, exc
            if done:
                if waits:
                    bound.info("dependency_back", waited_retries=waits)
                self.stats.waiting = None
                return True

    def _wait(self, error: BaseException | None, waits: int, bound: structlog.typing.FilteringBoundLogger,
              delay: float | None = None) -> None:
        """A transient failure: say what we wait on, in health and in one log line."""
        assert error is not None
        self.stats.waiting = waiting_on(error)
        self.stats.last_error = cause(error)
        bound.warning("waiting_on_dependency", waiting_on=dependency(error), error=cause(error),
                      retries=waits, retry_in_s=round(delay or self._backoff(waits), 2))

    async def _park(self, step: Step, event: Envelope, error: BaseException | None,
                    kind: str, attempts: int, bound: structlog.typing.FilteringBoundLogger) -> None:
        reason = cause(error)
        self.stats.last_error = reason
        subject = step.msg.subject if step.msg is not None else event_subject(event.stream_id,
                                                                               event.type)
        payload = bytes(step.msg.data) if step.msg is not None else encode(event)
        key = (f"{event.stream_id}:{event.version}" if step.version
               else f"{event.stream_id}:{event.event_id}")
        await park(self.js, subject=subject, payload=payload, reason="apply_failed",
                   detail=reason, consumer=self.durable,
                   headers=step.msg.headers if step.msg is not None else None,
                   dedupe_id=f"{self.durable}:parked:{key}", log_it=False)
        async with transaction(self.pool) as conn:
            await self._record(conn, [step], parked=1)
        self.stats.parked += 1
        bound.error("handler_failed_parked", failure=kind, attempts=attempts, error=reason,
                    where=where(error), subject=subject)
        await self._after_done([step])

    async def _record(self, conn: asyncpg.Connection, steps: Sequence[Step], parked: int = 0) -> None:
        versions: dict[str, Handled] = {}
        for step in steps:
            if step.version is not None:
                versions[step.version[0]] = step.version[1]
        acked = [s.seq for s in steps if s.msg is not None]
        await self.ledger.record(conn, versions=versions,
                                 facts=[s.fact for s in steps if s.fact is not None],
                                 seq=max(acked) if acked else None, parked=parked)

    async def _after_done(self, steps: Sequence[Step]) -> None:
        """After the commit: side effects, then acks."""
        if not steps:
            return
        self._handled.remember(dict(s.version for s in steps if s.version is not None))
        self.stats.applied += sum(1 for s in steps if s.event is not None)
        if self.transactional:
            await self._after_commit()
        # Steps are done in order, so every message up to the last one here is done: one ack
        # covers them all (the consumer acks all below the one acked).
        last = next((s.msg for s in reversed(steps) if s.msg is not None), None)
        if last is None:
            return
        try:
            await last.ack()
        except Exception as exc:  # the steps are done all the same: never attempted again
            self.log.warning("ack_failed_messages_will_come_again", seq=last.metadata.sequence.stream,
                             error=cause(exc))

    async def _after_commit(self) -> None:
        if not isinstance(self.consumer, WithSideEffects):
            return
        try:
            await self.consumer.after_commit()
            self.stats.effect_errors = 0
        except Exception as exc:  # recorded as rows: retried at the next batch or idle fetch
            self.stats.effect_errors += 1
            self.stats.last_error = cause(exc)
            self.log.warning("side_effects_failed_will_retry", error=self.stats.last_error,
                             failures=self.stats.effect_errors)

    async def _load_ledger(self, streams: set[str], facts: set[FactKey]
                           ) -> tuple[dict[str, Handled], set[FactKey]]:
        versions = self._handled.lookup(streams)
        if unknown := streams - versions.keys():
            loaded = await self.ledger.versions(self.pool, unknown)
            self._handled.remember(loaded)
            versions.update(loaded)
        seen = await self.ledger.seen(self.pool, facts) if facts and self._by_id else set()
        return versions, seen

    def forget_handled(self) -> None:
        """Read the stream versions from the ledger again (it changed, or may have)."""
        self._handled.forget()

    async def _prune(self) -> None:
        """One bounded round of forgetting old facts; soon again while there is more."""
        try:
            gone = await self.ledger.prune_facts(self.pool, self.fact_retention_s,
                                                 self.prune_batch)
        except Exception as exc:  # not urgent: try again at the next round
            self.log.warning("fact_prune_failed", error=cause(exc))
            self._next_prune = time.monotonic() + self.prune_every_s
            return
        self.stats.pruned += gone
        if gone:
            self.log.info("facts_pruned", facts=gone)
        more = gone >= self.prune_batch
        self._next_prune = time.monotonic() + (min(1.0, self.prune_every_s) if more
                                               else self.prune_every_s)

    def _mark_oldest(self, seq: int) -> None:
        published = self._batch_times.get(seq)
        if published is not None:
            self._oldest_at = max(published, self._lead_started)

    async def _dead_letter(self, msg: Msg, err: DecodeError, dedupe_id: str) -> None:
        await dead_letter(self.js, subject=msg.subject, payload=bytes(msg.data), error=err,
                          consumer=self.durable, headers=msg.headers, dedupe_id=dedupe_id)

    def _backoff(self, failures: int) -> float:
        delay = min(self.retry_max_s, self.retry_initial_s * 2 ** (failures - 1))
        return float(delay * random.uniform(0.8, 1.2))


class _FailedAt(Exception):
    """The `index`-th step's event failed to apply (the transaction is undone)."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


class _BatchFailed(Exception):
    """A projection's `apply_batch` failed: which event failed is not known."""


def _categories(subjects: Sequence[str]) -> list[str]:
    """The categories a processor's subjects name (`*` for a subject naming none)."""
    return [category_of_subject(s) or "*" for s in subjects]
