"""Idempotency keys of commands.

A key is the client's `command_id` scoped by the command it was sent to (its subject,
`sdv.cmd.<service>.<command>`; the service is also the store's schema), bound to a fingerprint of
the request it came with:

- the same key with the same request returns the first outcome: nothing is appended again, and
  ids the service generated (a new rollout's id) are the first attempt's, read from that outcome;
- the same key with another request is refused with `IdempotencyConflict` (a `conflict` reply):
  the client reused a key, and neither answer would be right;
- only an accepted command binds its key. A rejection answers for the state at that moment, it
  is not a result: nothing is recorded, so a retry decides again and may pass once the state
  changed (a retry that meets the key bound meanwhile by a concurrent twin gets that outcome);
- keys expire after a TTL (24 h by default, `SDV_IDEMPOTENCY_TTL_S`): an expired key is a new
  key. Lookups ignore expired keys, so pruning them (`key_pruner`) only bounds the table.

The fingerprint is the sha256 of the request as the service decoded it, re-encoded canonically
(declared field order, dict keys sorted, defaults filled in): what the client asked, independent
of its JSON spelling and of anything the server adds later (the clock, generated ids).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import msgspec
import structlog

from sdv_events.aio import sleep_or_stop

if TYPE_CHECKING:
    import asyncio

    from sdv_events.supervision import Work

log = structlog.get_logger("sdv.idempotency")

DEFAULT_KEY_TTL = timedelta(hours=24)
# Expired keys are already invisible to lookups; pruning only keeps the table small.
PRUNE_EVERY_S = 600.0

_canonical = msgspec.json.Encoder(order="deterministic")


class IdempotencyKey(msgspec.Struct, frozen=True):
    """`command_id` within `command`, bound to the request's `fingerprint`."""

    command: str
    command_id: str
    fingerprint: str


def request_fingerprint(request: msgspec.Struct) -> str:
    return hashlib.sha256(_canonical.encode(request)).hexdigest()


def idempotency_key(command: str, command_id: str, request: msgspec.Struct) -> IdempotencyKey:
    return IdempotencyKey(command, command_id, request_fingerprint(request))


class PrunableStore(Protocol):
    """What pruning needs of a store (`store.postgres.EventStore`, which imports this module
    for its keys: named here by what it does, so the two do not import each other)."""

    @property
    def schema(self) -> str: ...

    async def prune_idempotency_keys(self) -> int: ...


def key_pruner(store: PrunableStore, *, every_s: float = PRUNE_EVERY_S) -> Work:
    """A supervised task (`runtime.spawn`) deleting `store`'s expired keys every `every_s`.

    Periodic rather than on append: appends of a schema run one at a time (the commit-order
    lock), so work added there slows every writer. Replicas prune side by side without waiting
    on each other (`SKIP LOCKED`)."""

    async def prune(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                removed = await store.prune_idempotency_keys()
            except Exception as exc:
                # Nothing waits on pruning (expired keys are already ignored): a database
                # outage is retried at the next round, it must not use up the restarts that
                # would stop the service.
                log.warning("idempotency_prune_failed", schema=store.schema, error=repr(exc))
            else:
                if removed:
                    log.info("idempotency_keys_pruned", schema=store.schema, removed=removed)
            await sleep_or_stop(stop, every_s)

    return prune
