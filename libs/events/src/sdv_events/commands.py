"""The one command runner: load (fold the stream) → decide → append with the expected version →
on conflict reload and retry (bounded) → typed outcome. No service writes this loop again.

With an idempotency key (see sdv_events.idempotency), an accepted outcome is recorded with the
events it appended; the same key and request later get that first outcome (`duplicate=True`).

Every event of a decision carries the command's metadata (correlation, causation, actor, trace);
a decider whose events have causes of their own (a device's fact, an earlier event of the same
decision) names them with `causes` (see `Causes`), so an audit can walk from any event back to
what started it."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
import structlog

from sdv_events.bus.rpc import command_error
from sdv_events.codec import decode_as, encode
from sdv_events.decider import Decider
from sdv_events.envelope import Envelope, Metadata
from sdv_events.errors import (
    ConcurrencyConflict,
    DomainError,
    DuplicateCommand,
    RetriesExhausted,
    UnknownEventType,
    UpgradeNeeded,
)
from sdv_events.idempotency import IdempotencyKey
from sdv_events.store.postgres import EventStore

C = TypeVar("C")
S = TypeVar("S")
log = structlog.get_logger("sdv.commands")
# What caused each event of a decision: the index of an earlier event of the same decision (its
# event id becomes the causation id), an id (a fact's), or None (the command's causation id).
Causes = Callable[[Sequence[Any]], Sequence[int | str | None]]


class Accepted(msgspec.Struct, frozen=True, tag="accepted"):
    stream_id: str
    version: int
    event_ids: list[uuid.UUID]
    event_types: list[str]
    duplicate: bool = False


class Refused(msgspec.Struct, frozen=True, tag="rejected"):
    """The decider refused the command (a `DomainError`): nothing was appended. Its wire tag
    stays "rejected", so outcomes encoded by earlier builds decode unchanged. At a service's
    boundary `raise_if_refused` turns it into the typed `CommandError` of its code."""

    stream_id: str
    code: str
    message: str
    duplicate: bool = False


CommandOutcome = Accepted | Refused


def raise_if_refused(outcome: CommandOutcome) -> Accepted:
    """The accepted outcome, or the refusal raised as the `CommandError` its code names
    (`conflict` → `Conflict`, `not_found` → `NotFound`, …). A decider's own code that is no
    error code of the contract (`yanked`) is a `sdv_events.bus.Rejected`, its code kept in
    `details["reason"]`."""
    if isinstance(outcome, Accepted):
        return outcome
    raise command_error(outcome.code, outcome.message)


async def recorded_outcome(store: EventStore, key: IdempotencyKey) -> CommandOutcome | None:
    """The outcome `key` is bound to (`duplicate=True`), None for a new key; raises
    `IdempotencyConflict` when it is bound to another request. For a handler that must not
    redo the work before the command (asking peers, reserving) when the command was accepted."""
    raw = await store.first_outcome(key)
    return None if raw is None else _first_outcome(raw)


def _first_outcome(raw: bytes) -> CommandOutcome:
    outcome: CommandOutcome = decode_as(raw, CommandOutcome)  # type: ignore[arg-type]
    return msgspec.structs.replace(outcome, duplicate=True)


class StateCache:
    """Folded states kept between commands, so a long stream (a 10,000-device rollout) is read
    once, then only its new events. Commands on one stream run one at a time per process (a
    lock per stream): no conflict retries among themselves, and an in-place `evolve` is safe.
    Other processes still meet optimistic concurrency: a conflict reads what they appended."""

    def __init__(self, max_streams: int = 10_000) -> None:
        self._states: dict[str, tuple[Any, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.max_streams = max_streams

    def lock(self, stream_id: str) -> asyncio.Lock:
        return self._locks.setdefault(stream_id, asyncio.Lock())

    def get(self, stream_id: str) -> tuple[Any, int] | None:
        return self._states.get(stream_id)

    def put(self, stream_id: str, state: Any, version: int) -> None:
        if stream_id not in self._states and len(self._states) >= self.max_streams:
            self._states.pop(next(iter(self._states)))  # oldest first: a plain FIFO bound
        self._states[stream_id] = (state, version)

    def forget(self, stream_id: str) -> None:
        self._states.pop(stream_id, None)


async def load(
    store: EventStore, decider: Decider[Any, Any, S], stream_id: str, cache: StateCache | None = None
) -> tuple[S, int]:
    """The stream's folded state and version. With a cache, under the stream's lock: `evolve`
    may update the cached state in place, so an unlocked read overlapping a command could
    apply the same events twice. Read the returned state before the next await."""
    if cache is None:
        return await _load(store, decider, stream_id, None)
    async with cache.lock(stream_id):
        return await _load(store, decider, stream_id, cache)


async def _load(
    store: EventStore, decider: Decider[Any, Any, S], stream_id: str, cache: StateCache | None
) -> tuple[S, int]:
    cached = cache.get(stream_id) if cache is not None else None
    state, version = cached if cached is not None else (decider.empty(), 0)
    try:
        events = await store.read_stream(stream_id, from_version=version + 1)
    except UnknownEventType as err:
        raise UpgradeNeeded(stream_id, err.type_name) from err
    for event in events:
        state = decider.evolve(state, event.data)
        version = event.version
    if cache is not None:
        cache.put(stream_id, state, version)
    return state, version


async def handle_command(
    store: EventStore,
    decider: Decider[C, Any, S],
    stream_id: str,
    command: C,
    *,
    key: IdempotencyKey | None = None,
    metadata: Metadata = Metadata(),
    max_attempts: int = 8,
    cache: StateCache | None = None,
    causes: Causes | None = None,
) -> CommandOutcome:
    """Run `command` against the stream; a `DomainError` becomes `Refused`.

    A `key` already bound to the same request returns the first outcome (`duplicate=True`,
    perhaps of another stream: ids the first attempt generated) and appends nothing; bound to
    another request, `IdempotencyConflict`. Only an acceptance binds the key (a rejection is
    decided again on a retry)."""
    if cache is None:
        return await _handle(store, decider, stream_id, command, key, metadata, max_attempts, None,
                             causes)
    async with cache.lock(stream_id):
        try:
            return await _handle(store, decider, stream_id, command, key, metadata,
                                 max_attempts, cache, causes)
        except BaseException:
            cache.forget(stream_id)  # a failure mid-way may have left the cached state unsure
            raise


async def _handle(
    store: EventStore,
    decider: Decider[C, Any, S],
    stream_id: str,
    command: C,
    key: IdempotencyKey | None,
    metadata: Metadata,
    max_attempts: int,
    cache: StateCache | None,
    causes: Causes | None = None,
) -> CommandOutcome:
    if key is not None:
        first = await store.first_outcome(key)
        if first is not None:
            return _first_outcome(first)
        metadata = msgspec.structs.replace(metadata, causation_id=key.command_id)
    for attempt in range(1, max_attempts + 1):
        state, version = await _load(store, decider, stream_id, cache)  # lock held by caller
        try:
            new_events = list(decider.decide(command, state))
        except DomainError as err:
            # A concurrent twin of this request may have been accepted meanwhile (and be why
            # this one is refused): the key's first outcome is then the answer.
            first = await store.first_outcome(key) if key is not None else None
            if first is not None:
                return _first_outcome(first)
            return Refused(stream_id, err.code, err.message)
        envelopes = _wrap_all(store, stream_id, version, new_events, metadata, causes)
        accepted = Accepted(
            stream_id, version + len(envelopes), [e.event_id for e in envelopes], [e.type for e in envelopes]
        )
        try:
            await store.append_envelopes(
                stream_id, version, envelopes,
                key=key, outcome=encode(accepted) if key is not None else None,
            )
        except ConcurrencyConflict:
            log.debug("command_conflict_retry", stream_id=stream_id, attempt=attempt)
            await asyncio.sleep(random.uniform(0, 0.002 * attempt))
            continue
        except DuplicateCommand as dup:
            return _first_outcome(dup.outcome)
        if cache is not None:
            for body in new_events:
                state = decider.evolve(state, body)
            cache.put(stream_id, state, accepted.version)
        return accepted
    raise RetriesExhausted(stream_id, max_attempts)


def _wrap_all(store: EventStore, stream_id: str, version: int, bodies: Sequence[Any],
              metadata: Metadata, causes: Causes | None) -> list[Envelope]:
    """The decision's envelopes, each with its own causation when `causes` names one."""
    found = causes(bodies) if causes is not None else [None] * len(bodies)
    if len(found) != len(bodies):
        raise ValueError(f"causes named {len(found)} causes for {len(bodies)} events")
    envelopes: list[Envelope] = []
    for i, (body, cause) in enumerate(zip(bodies, found, strict=True)):
        meta = metadata
        if isinstance(cause, int):
            if not 0 <= cause < i:
                raise ValueError(f"event {i} names event {cause} as its cause: not an earlier one")
            meta = msgspec.structs.replace(metadata, causation_id=str(envelopes[cause].event_id))
        elif cause is not None:
            meta = msgspec.structs.replace(metadata, causation_id=cause)
        envelopes.append(store.wrap(stream_id, version + i + 1, body, meta, store.clock()))
    return envelopes
