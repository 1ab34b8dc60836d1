"""Projections: read models fed from a durable JetStream consumer, exactly-once in effect.

Each batch is applied in one PostgreSQL transaction together with the checkpoint (the stream
sequence of the last message handled, advanced also for ignored or dead-lettered messages);
acks go out only after the commit. The checkpoint, not the consumer's ack state, is the truth:
at every (re)start the runner recreates its durable consumer at `checkpoint + 1`, so messages
that were applied but not acked before a crash are never applied twice, and messages that were
acked by nobody are never skipped. One runner per projection leads (advisory lock); replicas
stand by.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import asyncpg
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from sdv_events.aio import sleep_or_stop
from sdv_events.bus.deadletter import dead_letter
from sdv_events.codec import decode_envelope
from sdv_events.envelope import Envelope
from sdv_events.errors import DecodeError, SdvError
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.registry import EventRegistry, default_registry
from sdv_events.store.postgres import pooled_session

log = structlog.get_logger("sdv.projections")


class ProjectionBusy(SdvError):
    """Another runner leads this projection; a rebuild now would race it."""


class Projection(Protocol):
    """A read model. `apply` and `reset` run inside the runner's transaction."""

    name: str
    filter_subjects: Sequence[str]

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None: ...

    async def reset(self, conn: asyncpg.Connection) -> None: ...


class ProjectionRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        js: JetStreamContext,
        projection: Projection,
        *,
        stream: str = EVENTS_STREAM,
        batch_size: int = 256,
        fetch_timeout_s: float = 0.5,
        registry: EventRegistry = default_registry,
        after_commit: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.js = js
        self.projection = projection
        self.stream = stream
        self.batch_size = batch_size
        self.fetch_timeout_s = fetch_timeout_s
        self.registry = registry
        # Test seam: runs after the commit and before the acks (a crash there must be harmless).
        self.after_commit = after_commit
        self.checkpoint_name = f"projection:{projection.name}"
        self.durable = f"proj_{schema}_{projection.name}"
        self.applied = 0
        self.dead_lettered = 0

    async def checkpoint(self, conn: asyncpg.Connection | asyncpg.Pool | None = None) -> int:
        source = conn or self.pool
        value = await source.fetchval(
            f"SELECT position FROM {self.schema}.checkpoints WHERE name = $1", self.checkpoint_name
        )
        return int(value or 0)

    async def _recreate_consumer(self) -> None:
        start = await self.checkpoint() + 1
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.stream, self.durable)
        subjects = list(self.projection.filter_subjects)
        await self.js.add_consumer(self.stream, ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60,
            max_ack_pending=self.batch_size * 4,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
        ))

    async def handle_batch(self, msgs: Sequence[Msg]) -> int:
        """Apply a batch in one transaction with the checkpoint, then ack. Returns applied count."""
        applied = 0
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {self.schema}.checkpoints (name) VALUES ($1) "
                "ON CONFLICT (name) DO NOTHING", self.checkpoint_name,
            )
            last = int(await conn.fetchval(
                f"SELECT position FROM {self.schema}.checkpoints WHERE name = $1 FOR UPDATE",
                self.checkpoint_name,
            ))
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if seq <= last:
                    continue  # applied before a crash that came before its ack
                try:
                    event = decode_envelope(msg.data, registry=self.registry)
                except DecodeError as err:
                    await dead_letter(
                        self.js, subject=msg.subject, payload=msg.data, error=err,
                        consumer=self.durable, headers=msg.headers,
                        dedupe_id=f"{self.durable}:{seq}",
                    )
                    self.dead_lettered += 1
                else:
                    await self.projection.apply(conn, event)
                    applied += 1
                last = seq
            await conn.execute(
                f"UPDATE {self.schema}.checkpoints SET position = $2, updated_at = now() "
                "WHERE name = $1", self.checkpoint_name, last,
            )
        if self.after_commit is not None:
            await self.after_commit(applied)
        for msg in msgs:
            await msg.ack()
        self.applied += applied
        return applied

    async def _reset(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.projection.reset(conn)
            await conn.execute(
                f"INSERT INTO {self.schema}.checkpoints (name, position) VALUES ($1, 0) "
                "ON CONFLICT (name) DO UPDATE SET position = 0, updated_at = now()",
                self.checkpoint_name,
            )

    async def _lead(self, stop: asyncio.Event, until_caught_up: bool, reset: bool = False) -> bool:
        """Feed the read model while holding leadership; False when another runner leads."""
        async with pooled_session(self.pool) as lock_conn:
            got = await lock_conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))",
                f"sdv_projection:{self.schema}", self.projection.name,
            )
            if not got:
                return False
            if reset:  # only the leader may wipe the read model, or the live runner would skip history
                await self._reset()
            await self._recreate_consumer()
            sub = await self.js.pull_subscribe_bind(self.durable, self.stream)
            try:
                while not stop.is_set():
                    try:
                        msgs = await sub.fetch(self.batch_size, timeout=self.fetch_timeout_s)
                    except TimeoutError:
                        if until_caught_up and await self.pending() == 0:
                            return True
                        continue
                    await self.handle_batch(msgs)
            finally:
                await sub.unsubscribe()
            return True

    async def pending(self) -> int:
        info = await self.js.consumer_info(self.stream, self.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def run(self, stop: asyncio.Event, *, until_caught_up: bool = False) -> None:
        """Feed the read model until `stop` (or, with `until_caught_up`, until nothing is pending).
        While another runner of this projection leads, stand by and retry every second."""
        while not stop.is_set():
            try:
                led = await self._lead(stop, until_caught_up)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("projection_error_restarting", projection=self.projection.name,
                            error=repr(exc))
                await sleep_or_stop(stop, 0.5)
                continue
            if led and until_caught_up:
                return
            if not led:
                await sleep_or_stop(stop, 1.0)

    async def rebuild(self) -> None:
        """Drop the read model and replay from stream position 0 until caught up. Refused with
        `ProjectionBusy` while another runner of this projection is leading (stop it first)."""
        if not await self._lead(asyncio.Event(), until_caught_up=True, reset=True):
            raise ProjectionBusy(
                f"projection {self.projection.name!r} of {self.schema!r} is being fed by another "
                "runner; stop it before rebuilding"
            )
