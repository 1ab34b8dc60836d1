"""The one command runner: load (fold the stream) → decide → append with the expected version →
on conflict reload and retry (bounded) → typed outcome. No service writes this loop again."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any, TypeVar

import msgspec
import structlog

from sdv_events.codec import decode_as, encode
from sdv_events.decider import Decider
from sdv_events.envelope import Metadata
from sdv_events.errors import ConcurrencyConflict, DomainError, DuplicateCommand, RetriesExhausted
from sdv_events.store.postgres import ANY, EventStore

C = TypeVar("C")
S = TypeVar("S")
log = structlog.get_logger("sdv.commands")


class Accepted(msgspec.Struct, frozen=True, tag="accepted"):
    stream_id: str
    version: int
    event_ids: list[uuid.UUID]
    event_types: list[str]
    duplicate: bool = False


class Rejected(msgspec.Struct, frozen=True, tag="rejected"):
    stream_id: str
    code: str
    message: str
    duplicate: bool = False


CommandOutcome = Accepted | Rejected


def _first_outcome(raw: bytes) -> CommandOutcome:
    outcome: CommandOutcome = decode_as(raw, CommandOutcome)  # type: ignore[arg-type]
    return msgspec.structs.replace(outcome, duplicate=True)


async def load(store: EventStore, decider: Decider[Any, Any, S], stream_id: str) -> tuple[S, int]:
    history = await store.read_stream(stream_id)
    state = decider.fold(e.data for e in history)
    return state, (history[-1].version if history else 0)


async def handle_command(
    store: EventStore,
    decider: Decider[C, Any, S],
    stream_id: str,
    command: C,
    *,
    command_id: str | None = None,
    metadata: Metadata = Metadata(),
    max_attempts: int = 8,
) -> CommandOutcome:
    """Run `command` against the stream. A repeated `command_id` returns the first outcome
    (with `duplicate=True`) and appends nothing; a `DomainError` becomes `Rejected`."""
    if command_id is not None:
        first = await store.command_outcome(command_id)
        if first is not None:
            return _first_outcome(first)
        metadata = msgspec.structs.replace(metadata, causation_id=command_id)
    for attempt in range(1, max_attempts + 1):
        state, version = await load(store, decider, stream_id)
        try:
            new_events = list(decider.decide(command, state))
        except DomainError as err:
            rejected = Rejected(stream_id, err.code, err.message)
            if command_id is not None:
                try:
                    await store.append(stream_id, ANY, [], command_id=command_id, outcome=encode(rejected))
                except DuplicateCommand as dup:
                    return _first_outcome(dup.outcome)
            return rejected
        envelopes = [
            store.wrap(stream_id, version + i + 1, body, metadata, store.clock())
            for i, body in enumerate(new_events)
        ]
        accepted = Accepted(
            stream_id, version + len(envelopes), [e.event_id for e in envelopes], [e.type for e in envelopes]
        )
        try:
            await store.append_envelopes(
                stream_id, version, envelopes,
                command_id=command_id, outcome=encode(accepted) if command_id else None,
            )
        except ConcurrencyConflict:
            log.debug("command_conflict_retry", stream_id=stream_id, attempt=attempt)
            await asyncio.sleep(random.uniform(0, 0.002 * attempt))
            continue
        except DuplicateCommand as dup:
            return _first_outcome(dup.outcome)
        return accepted
    raise RetriesExhausted(stream_id, max_attempts)

