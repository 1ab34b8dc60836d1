"""The one command runner on the real store: outcomes, refusals, idempotency, conflict retries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec
import pytest

from sdv_events.commands import Accepted, Refused, handle_command
from sdv_events.decider import Decider
from sdv_events.envelope import Envelope, Metadata
from sdv_events.errors import DomainError, IdempotencyConflict, RetriesExhausted
from sdv_events.idempotency import IdempotencyKey, idempotency_key
from sdv_events.registry import EventRegistry, event
from sdv_events.store import ANY, AppendResult, EventStore

REG = EventRegistry()


# --- a toy counter with a ceiling ---------------------------------------------------------------
@event("cmdtest.Incremented", registry=REG)
class Incremented(msgspec.Struct, frozen=True):
    by: int


@event("cmdtest.LimitReached", registry=REG)
class LimitReached(msgspec.Struct, frozen=True):
    limit: int


@event("cmdtest.LimitRaised", registry=REG)
class LimitRaised(msgspec.Struct, frozen=True):
    limit: int


class Increment(msgspec.Struct, frozen=True):
    by: int = 1


class RaiseLimit(msgspec.Struct, frozen=True):
    limit: int


class Counter(msgspec.Struct, frozen=True):
    value: int = 0
    limit: int = 1_000


def decide(command: Increment | RaiseLimit, state: Counter) -> Sequence[Incremented | LimitReached
                                                                         | LimitRaised]:
    if isinstance(command, RaiseLimit):
        return [LimitRaised(command.limit)]
    if command.by <= 0:
        raise DomainError(f"increment must be positive, got {command.by}", code="invalid_amount")
    if state.value + command.by > state.limit:
        raise DomainError(f"{state.value} + {command.by} exceeds {state.limit}", code="over_limit")
    if state.value + command.by == state.limit:
        return [Incremented(command.by), LimitReached(state.limit)]
    return [Incremented(command.by)]


def evolve(state: Counter, e: Incremented | LimitReached | LimitRaised) -> Counter:
    if isinstance(e, Incremented):
        return msgspec.structs.replace(state, value=state.value + e.by)
    if isinstance(e, LimitRaised):
        return msgspec.structs.replace(state, limit=e.limit)
    return state


counter = Decider(initial=Counter(), decide=decide, evolve=evolve)
small = Decider(initial=Counter(limit=3), decide=decide, evolve=evolve)


def key(command_id: str, request: msgspec.Struct, command: str = "sdv.cmd.cmdtest.increment"
        ) -> IdempotencyKey:
    """What `RequestInfo.idempotency_key` gives the handler of that request."""
    return idempotency_key(command, command_id, request)


@pytest.fixture
def es(store: EventStore) -> EventStore:
    return EventStore(store.pool, store.schema, registry=REG)


async def value_of(es: EventStore, stream: str) -> int:
    return counter.fold(e.data for e in await es.read_stream(stream)).value


# --- outcomes -----------------------------------------------------------------------------------


async def test_accepted_command_appends_its_events(es: EventStore) -> None:
    meta = Metadata(correlation_id="corr-1", actor="alice")

    outcome = await handle_command(es, counter, "counter-a", Increment(5), key=key("c-1", Increment(5)), metadata=meta)

    assert isinstance(outcome, Accepted)
    assert (outcome.stream_id, outcome.version, outcome.duplicate) == ("counter-a", 1, False)
    assert outcome.event_types == ["cmdtest.Incremented.v1"]
    stored = await es.read_stream("counter-a")
    assert [e.data for e in stored] == [Incremented(5)]
    assert [e.event_id for e in stored] == outcome.event_ids
    # Events say which command caused them, and keep the caller's correlation and actor.
    assert (stored[0].causation_id, stored[0].correlation_id, stored[0].actor) == ("c-1", "corr-1", "alice")


async def test_events_of_one_decision_name_their_own_causes(es: EventStore) -> None:
    # The limit reached is caused by the increment before it; the increment by a fact (an id).
    def causes(events: Sequence[object]) -> list[int | str | None]:
        return ["fact-7" if isinstance(e, Incremented) else 0 for e in events]

    meta = Metadata(correlation_id="corr-2", causation_id="tick:1", actor="system")
    await handle_command(es, small, "counter-c", Increment(3), metadata=meta, causes=causes)
    increment, reached = await es.read_stream("counter-c")
    assert (increment.causation_id, reached.causation_id) == ("fact-7", str(increment.event_id))
    assert {(e.correlation_id, e.actor) for e in (increment, reached)} == {("corr-2", "system")}
    # Without a cause of its own an event carries the command's.
    await handle_command(es, counter, "counter-c2", Increment(1), metadata=meta,
                         causes=lambda events: [None] * len(events))
    assert [e.causation_id for e in await es.read_stream("counter-c2")] == ["tick:1"]


async def test_several_events_from_one_decision_append_together(es: EventStore) -> None:
    await handle_command(es, small, "counter-b", Increment(1))

    outcome = await handle_command(es, small, "counter-b", Increment(2))

    assert isinstance(outcome, Accepted)
    assert outcome.version == 3
    assert outcome.event_types == ["cmdtest.Incremented.v1", "cmdtest.LimitReached.v1"]
    assert [e.event_id for e in (await es.read_stream("counter-b"))[1:]] == outcome.event_ids


async def test_domain_error_becomes_rejected_and_appends_nothing(es: EventStore) -> None:
    await handle_command(es, small, "counter-c", Increment(2))

    outcome = await handle_command(es, small, "counter-c", Increment(2), key=key("c-over", Increment(2)))

    assert outcome == Refused("counter-c", "over_limit", "2 + 2 exceeds 3")
    assert await es.stream_version("counter-c") == 1


async def test_rejection_of_a_new_stream_creates_no_stream(es: EventStore) -> None:
    outcome = await handle_command(es, counter, "counter-d", Increment(0), key=key("c-zero", Increment(0)))

    assert isinstance(outcome, Refused)
    assert outcome.code == "invalid_amount"
    assert await es.read_stream("counter-d") == []
    assert [e async for e in es.read_all()] == []


# --- idempotency --------------------------------------------------------------------------------


async def test_replayed_command_returns_first_outcome_and_appends_nothing(es: EventStore) -> None:
    first = await handle_command(es, counter, "counter-e", Increment(3), key=key("c-same", Increment(3)))
    version = await es.stream_version("counter-e")

    again = await handle_command(es, counter, "counter-e", Increment(3), key=key("c-same", Increment(3)))

    assert isinstance(first, Accepted)
    assert again == msgspec.structs.replace(first, duplicate=True)
    assert await es.stream_version("counter-e") == version == 1
    assert await value_of(es, "counter-e") == 3


async def test_same_key_with_another_request_is_a_conflict_and_appends_nothing(es: EventStore) -> None:
    await handle_command(es, counter, "counter-f", Increment(3), key=key("c-f", Increment(3)))

    with pytest.raises(IdempotencyConflict) as info:
        await handle_command(es, counter, "counter-f", Increment(50), key=key("c-f", Increment(50)))

    assert (info.value.command, info.value.command_id) == ("sdv.cmd.cmdtest.increment", "c-f")
    assert await value_of(es, "counter-f") == 3


async def test_same_key_and_request_on_another_stream_returns_the_first_streams_outcome(
    es: EventStore,
) -> None:
    """A service that generates the stream's id (a create without an id) picks another stream on
    a retry: the first attempt's outcome names the stream it really created."""
    first = await handle_command(es, counter, "counter-p1", Increment(2), key=key("c-p", Increment(2)))

    again = await handle_command(es, counter, "counter-p2", Increment(2), key=key("c-p", Increment(2)))

    assert again == msgspec.structs.replace(first, duplicate=True)
    assert again.stream_id == "counter-p1"
    assert await es.stream_version("counter-p2") == 0


async def test_same_command_id_on_another_command_is_an_independent_key(es: EventStore) -> None:
    first = await handle_command(es, counter, "counter-q", Increment(2), key=key("c-q", Increment(2)))

    other = await handle_command(es, counter, "counter-q", Increment(2),
                                 key=key("c-q", Increment(2), command="sdv.cmd.cmdtest.bump"))

    assert isinstance(other, Accepted)
    assert not other.duplicate
    assert other.version == first.version + 1
    assert await value_of(es, "counter-q") == 4


async def test_a_repeated_rejection_is_decided_again_not_replayed(es: EventStore) -> None:
    await handle_command(es, small, "counter-g", Increment(3))
    first = await handle_command(es, small, "counter-g", Increment(1), key=key("c-late", Increment(1)))

    again = await handle_command(es, small, "counter-g", Increment(1), key=key("c-late", Increment(1)))

    assert first == again == Refused("counter-g", "over_limit", "3 + 1 exceeds 3")
    assert not again.duplicate
    assert await es.first_outcome(key("c-late", Increment(1))) is None  # the key is not bound
    assert await es.stream_version("counter-g") == 2  # Incremented + LimitReached, nothing since


async def test_a_rejection_is_not_final_a_retry_passes_once_the_state_changed(es: EventStore) -> None:
    await handle_command(es, small, "counter-h", Increment(3))
    refused = await handle_command(es, small, "counter-h", Increment(2), key=key("c-h", Increment(2)))
    await handle_command(es, small, "counter-h", RaiseLimit(10))

    retried = await handle_command(es, small, "counter-h", Increment(2), key=key("c-h", Increment(2)))
    replayed = await handle_command(es, small, "counter-h", Increment(2), key=key("c-h", Increment(2)))

    assert isinstance(refused, Refused)
    assert isinstance(retried, Accepted)
    assert not retried.duplicate
    assert replayed == msgspec.structs.replace(retried, duplicate=True)  # now bound: applied once
    assert await value_of(es, "counter-h") == 5


async def test_concurrent_duplicates_of_one_command_apply_once(es: EventStore) -> None:
    outcomes = await asyncio.gather(
        *(handle_command(es, counter, "counter-i", Increment(7), key=key("c-i", Increment(7))) for _ in range(6))
    )

    originals = [o for o in outcomes if not o.duplicate]
    assert len(originals) == 1
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert {tuple(o.event_ids) for o in outcomes} == {tuple(originals[0].event_ids)}
    assert await value_of(es, "counter-i") == 7
    assert await es.stream_version("counter-i") == 1


# --- concurrency --------------------------------------------------------------------------------


async def test_concurrent_commands_all_succeed_through_retries(es: EventStore) -> None:
    n = 20
    # Each failed attempt of one command overlaps a commit of another command, and attempts of one
    # command do not overlap each other, so n attempts always suffice for n contenders.
    outcomes = await asyncio.gather(
        *(handle_command(es, counter, "counter-j", Increment(i), max_attempts=n) for i in range(1, n + 1))
    )

    assert all(isinstance(o, Accepted) for o in outcomes)
    assert sorted(o.version for o in outcomes) == list(range(1, n + 1))
    assert await value_of(es, "counter-j") == n * (n + 1) // 2
    assert await es.stream_version("counter-j") == n


async def test_single_attempt_under_contention_never_loses_or_doubles_an_update(es: EventStore) -> None:
    outcomes = await asyncio.gather(
        *(handle_command(es, counter, "counter-k", Increment(1), max_attempts=1) for _ in range(10)),
        return_exceptions=True,
    )

    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    exhausted = [o for o in outcomes if isinstance(o, RetriesExhausted)]
    assert len(accepted) + len(exhausted) == 10, outcomes
    assert accepted
    assert all(e.attempts == 1 and e.stream_id == "counter-k" for e in exhausted)
    assert await value_of(es, "counter-k") == len(accepted)


class InterferingStore(EventStore):
    """Another writer slips `Incremented(by)` in between the runner's load and its append."""

    def __init__(self, inner: EventStore, *, interruptions: int, by: int = 100) -> None:
        super().__init__(inner.pool, inner.schema, registry=REG)
        self.interruptions = interruptions
        self.by = by

    async def append_envelopes(
        self, stream_id: str, expected_version: int, envelopes: list[Envelope], **kwargs: object
    ) -> AppendResult:
        if envelopes and self.interruptions > 0:
            self.interruptions -= 1
            interloper = self.wrap(stream_id, 1, Incremented(self.by), Metadata(), self.clock())
            await super().append_envelopes(stream_id, ANY, [interloper])
        return await super().append_envelopes(stream_id, expected_version, envelopes, **kwargs)  # type: ignore[arg-type]


async def test_conflict_retry_appends_after_the_other_writer(es: EventStore) -> None:
    racy = InterferingStore(es, interruptions=1)

    outcome = await handle_command(racy, counter, "counter-l", Increment(5), key=key("c-l", Increment(5)))

    assert racy.interruptions == 0
    assert isinstance(outcome, Accepted)
    assert outcome.version == 2
    assert [e.data for e in await es.read_stream("counter-l")] == [Incremented(100), Incremented(5)]


async def test_conflict_retry_decides_again_on_fresh_state(es: EventStore) -> None:
    # Decided on value 0 (2 fits under the limit of 3); meanwhile another writer adds 2.
    racy = InterferingStore(es, interruptions=1, by=2)

    outcome = await handle_command(racy, small, "counter-m", Increment(2), key=key("c-m", Increment(2)))

    assert outcome == Refused("counter-m", "over_limit", "2 + 2 exceeds 3")
    assert [e.data for e in await es.read_stream("counter-m")] == [Incremented(2)]


async def test_retries_exhausted_after_max_attempts(es: EventStore) -> None:
    racy = InterferingStore(es, interruptions=1_000)

    with pytest.raises(RetriesExhausted) as info:
        await handle_command(racy, counter, "counter-n", Increment(1), key=key("c-n", Increment(1)), max_attempts=3)

    assert (info.value.stream_id, info.value.attempts) == ("counter-n", 3)
    assert [e.data for e in await es.read_stream("counter-n")] == [Incremented(100)] * 3
    assert await es.first_outcome(key("c-n", Increment(1))) is None  # a later retry may still pass
    racy.interruptions = 0
    assert isinstance(
        await handle_command(racy, counter, "counter-n", Increment(1), key=key("c-n", Increment(1))), Accepted
    )


async def test_state_cache_reads_only_new_events_and_stays_correct_across_two_processes(
    es: EventStore,
) -> None:
    """Two caches stand for two orchestrator replicas: OCC still decides who wins."""
    from sdv_events.commands import StateCache, load

    store = es
    first, second = StateCache(), StateCache()
    stream = "counter-cached"
    results = await asyncio.gather(*[
        handle_command(store, counter, stream, Increment(1), cache=cache, max_attempts=40)
        for cache in [first, second] * 10
    ])
    assert all(isinstance(r, Accepted) for r in results)
    _, version = first.get(stream) or (None, 0)
    fresh, fresh_version = await load(store, counter, stream)
    assert version <= fresh_version == 20
    assert (await load(store, counter, stream, first)) == (fresh, fresh_version)
    reads: list[int] = []
    original = store.read_stream

    async def counting(stream_id: str, from_version: int = 1):  # type: ignore[no-untyped-def]
        reads.append(from_version)
        return await original(stream_id, from_version)

    store.read_stream = counting  # type: ignore[method-assign]
    await handle_command(store, counter, stream, Increment(1), cache=first)
    assert reads == [21]  # only what came after the cached version
