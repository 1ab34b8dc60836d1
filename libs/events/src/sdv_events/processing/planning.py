"""From a fetched batch to the ordered steps a consumer takes: decode, dedupe, heal gaps.

Each message becomes one or more steps, in order. A step hands an event over (or not: a
duplicate, a type the processor does not handle, a dead letter) and says what to record once it
is done — the stream version or the event id — and the message to ack after its last step. A
message whose version leaves a gap after the last one handled is preceded by the missing
events, read from the stream's owning store; it is never applied before them. Planning does
all its I/O (reads from the owner, dead letters) before the runner opens a transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from nats.aio.msg import Msg

from sdv_events.codec import WireEnvelope, decode_as, decode_body
from sdv_events.envelope import Envelope
from sdv_events.errors import DecodeError, SdvError, UnknownEventType
from sdv_events.ids import InvalidStreamId, split_stream_id
from sdv_events.processing.categories import SubjectSet, is_versioned
from sdv_events.processing.ledger import FactKey, Handled
from sdv_events.processing.processor import Start
from sdv_events.processing.sources import StreamSource
from sdv_events.registry import EventRegistry
from sdv_events.subjects import event_subject


class GapNotHealed(SdvError):
    """A stream's versions jump and its owning store could not supply the missing events."""

    def __init__(self, stream_id: str, expected: int, got: int, detail: str) -> None:
        super().__init__(f"stream {stream_id!r}: version {got} arrived after {expected - 1} and "
                         f"the owning store could not fill the gap ({detail})")
        self.stream_id = stream_id
        self.expected = expected
        self.got = got


@dataclass
class Step:
    seq: int
    event: Envelope | None = None  # handed to the processor when set
    version: tuple[str, Handled] | None = None  # record: stream → version (and its event id)
    fact: FactKey | None = None  # record: a device's fact handled
    msg: Msg | None = None  # ack once this step is done (a message's last step)
    healed: bool = False


BlockKind = Literal["upgrade_needed", "divergent_history"]


@dataclass(frozen=True)
class Blocked:
    """The consumer stops here, in a trusted category: an event this build cannot read
    (`upgrade_needed`), or a version it already handled under another event id
    (`divergent_history`: an operator must decide)."""

    msg: Msg
    stream_id: str
    version: int
    type: str
    reason: str
    kind: BlockKind = "upgrade_needed"

    @property
    def summary(self) -> str:
        if self.kind == "divergent_history":
            return self.reason
        return f"stopped at {self.stream_id} v{self.version} ({self.type}): {self.reason}"


@dataclass
class Plan:
    steps: list[Step]
    blocked: Blocked | None = None
    duplicates: int = 0
    dead_letters: int = 0
    healed: int = 0


DeadLetter = Callable[[Msg, DecodeError, str], Awaitable[None]]
# Given the stream ids and facts of a batch: (last event handled per stream, facts handled).
LoadLedger = Callable[[set[str], set[FactKey]], Awaitable[tuple[dict[str, Handled], set[FactKey]]]]


@dataclass
class Planner:
    consumer: str
    filter_subjects: Sequence[str]
    registry: EventRegistry
    source: StreamSource | None
    start: Start
    dead_letter: DeadLetter
    # What the consumer reads of what its JetStream filter delivers (None: all of it).
    reads: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        self._handled = SubjectSet(self.filter_subjects)

    def handles(self, subject: str) -> bool:
        return self._handled.reads(subject)

    async def plan(self, msgs: Sequence[Msg], load: LoadLedger, since: datetime | None) -> Plan:
        """The steps for `msgs`, in order. The ledger is loaded once for the batch and updated
        as the plan goes, so a duplicate inside the batch is one too."""
        wires: list[tuple[Msg, WireEnvelope | DecodeError | None]] = []
        reads = self.reads
        for msg in msgs:
            if reads is not None and not reads(msg.subject):
                wires.append((msg, None))  # another category: acked unread, its seq recorded
                continue
            try:
                decoded = decode_as(bytes(msg.data), WireEnvelope)
                split_stream_id(decoded.stream_id)
                wires.append((msg, decoded))
            except DecodeError as err:
                wires.append((msg, err))
            except InvalidStreamId as exc:
                wires.append((msg, DecodeError("invalid_value", str(exc), path="$.stream_id")))
        versions, seen = await load(
            {w.stream_id for _, w in wires if isinstance(w, WireEnvelope)},
            {(w.stream_id, w.event_id) for _, w in wires if isinstance(w, WireEnvelope)})
        plan = Plan([])
        for msg, wire in wires:
            seq = msg.metadata.sequence.stream
            if wire is None:
                plan.steps.append(Step(seq, msg=msg))
                continue
            if isinstance(wire, DecodeError):
                await self.dead_letter(msg, wire, f"{self.consumer}:{seq}")
                plan.dead_letters += 1
                plan.steps.append(Step(seq, msg=msg))
                continue
            if msg.subject != event_subject(wire.stream_id, wire.type):
                # The subject is what NATS permissions vouch for (a device publishes only under
                # its own id): an envelope claiming another stream or type is refused.
                await self.dead_letter(msg, DecodeError(
                    "invalid_value", f"subject {msg.subject!r} does not match the envelope's "
                    f"stream {wire.stream_id!r} and type {wire.type!r}", path="$.stream_id"),
                    f"{self.consumer}:{seq}")
                plan.dead_letters += 1
                plan.steps.append(Step(seq, msg=msg))
                continue
            category, _ = split_stream_id(wire.stream_id)
            if not is_versioned(category):
                await self._by_id(plan, msg, seq, wire, seen)
                continue
            handled = versions.get(wire.stream_id)
            last = handled.version if handled is not None else None
            if handled is not None and wire.version == handled.version and \
                    handled.event_id is not None and handled.event_id != wire.event_id:
                plan.blocked = Blocked(
                    msg, wire.stream_id, wire.version, wire.type,
                    f"divergent history: {wire.stream_id} v{wire.version} is {handled.event_id} "
                    f"here, {wire.event_id} on the bus", kind="divergent_history")
                return plan
            if last is not None and wire.version <= last:
                plan.duplicates += 1
                plan.steps.append(Step(seq, msg=msg))
                continue
            if wire.version > (last or 0) + 1:
                try:
                    await self._heal(plan, seq, wire, last, since)
                except UnknownEventType as err:
                    plan.blocked = Blocked(msg, wire.stream_id, wire.version, err.type_name,
                                           f"the owning store's {err.type_name} is unknown to "
                                           "this build: upgrade needed")
                    return plan
            step = Step(seq, version=(wire.stream_id, Handled(wire.version, wire.event_id)),
                        msg=msg)
            versions[wire.stream_id] = Handled(wire.version, wire.event_id)
            if self.handles(msg.subject):
                try:
                    step.event = self._envelope(wire)
                except UnknownEventType as err:
                    plan.blocked = Blocked(msg, wire.stream_id, wire.version, err.type_name,
                                           f"{err.type_name} is unknown to this build "
                                           "(a newer writer): upgrade needed")
                    versions[wire.stream_id] = Handled(wire.version - 1, None)
                    return plan
                except DecodeError as err:
                    await self.dead_letter(msg, err, f"{self.consumer}:{wire.stream_id}:{wire.version}")
                    plan.dead_letters += 1
            plan.steps.append(step)
        return plan

    async def _by_id(self, plan: Plan, msg: Msg, seq: int, wire: WireEnvelope,
                     seen: set[FactKey]) -> None:
        # By stream and id: the subject vouches for the stream, nothing vouches for the id (a
        # device could reuse another device's fact id on its own subject).
        key = (wire.stream_id, wire.event_id)
        if key in seen:
            plan.duplicates += 1
            plan.steps.append(Step(seq, msg=msg))
            return
        seen.add(key)
        step = Step(seq, fact=key, msg=msg)
        if self.handles(msg.subject):
            try:  # untrusted: what this build cannot read is dead-lettered, never waited for
                step.event = self._envelope(wire)
            except DecodeError as err:
                await self.dead_letter(msg, err, f"{self.consumer}:{wire.stream_id}:{wire.event_id}")
                plan.dead_letters += 1
        plan.steps.append(step)

    async def _heal(self, plan: Plan, seq: int, wire: WireEnvelope, last: int | None,
                    since: datetime | None) -> None:
        expected = (last or 0) + 1
        fresh = last is None and self.start == "new"
        if self.source is None:
            if fresh:
                return  # a consumer of new events meets this stream mid-way: nothing to fill
            raise GapNotHealed(wire.stream_id, expected, wire.version, "no source to heal from")
        try:
            found = await self.source.read_stream(wire.stream_id, expected)
        except UnknownEventType:
            raise
        except Exception as exc:
            raise GapNotHealed(wire.stream_id, expected, wire.version,
                               f"{type(exc).__name__}: {exc}") from exc
        missing = [e for e in found if e.version < wire.version]
        if fresh:
            # Only what happened since this consumer was created: older events were never
            # meant for it (a policy must not start rollouts for last year's releases).
            missing = [e for e in missing if since is not None and e.occurred_at >= since]
        elif [e.version for e in missing] != list(range(expected, wire.version)):
            raise GapNotHealed(wire.stream_id, expected, wire.version,
                               f"it returned versions {[e.version for e in missing][:10]}")
        for event in missing:
            subject = event_subject(event.stream_id, event.type)
            plan.steps.append(Step(seq, event=event if self.handles(subject) else None,
                                   version=(event.stream_id, Handled(event.version, event.event_id)),
                                   healed=True))
            plan.healed += 1

    def _envelope(self, wire: WireEnvelope) -> Envelope:
        body = decode_body(wire.type, bytes(wire.data), registry=self.registry, path="$.data")
        return Envelope(
            event_id=wire.event_id, stream_id=wire.stream_id, version=wire.version, type=wire.type,
            schema_version=wire.schema_version, occurred_at=wire.occurred_at, data=body,
            correlation_id=wire.correlation_id, causation_id=wire.causation_id, actor=wire.actor,
            trace=wire.trace, position=wire.position,
        )
