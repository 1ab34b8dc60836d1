"""Relay: the event log → JetStream `SDV_EVENTS`, exactly once and in per-stream order.

The append-only `events` table is the outbox: every append already writes its rows in one
transaction, so a second outbox table would only double the writes. The relay tails the table
with a commit-safe cursor and checkpoints after JetStream acknowledged.

Why the cursor is `(tx_id, global_position)` and not the position alone: positions come from a
sequence when a row is inserted, not when its transaction commits. Transaction A may take
position 10, B position 11, and B commit first; a reader that advanced to 11 would skip 10
forever. So the relay reads only rows whose transaction id is below `pg_snapshot_xmin` (every
such transaction has ended, so that set never grows) in `(tx_id, position)` order. Per stream
that order is version order because `append_events` takes a per-stream advisory lock before the
transaction gets its xid.

Exactly once: each message carries `Nats-Msg-Id = event_id`. A relay that crashes after
publishing but before checkpointing publishes the same ids again on restart and JetStream drops
them as duplicates (within the stream's duplicate window, provisioning.DUPLICATE_WINDOW_S).
Only one relay per store publishes at a time: the leader holds a PostgreSQL advisory lock on the
connection it also reads and checkpoints with, so losing the connection loses leadership.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import msgspec
import structlog
from nats.js import JetStreamContext

from sdv_events.aio import sleep_or_stop, wait_any
from sdv_events.codec import WireEnvelope, decode_metadata
from sdv_events.store.postgres import EventStore, pooled_session
from sdv_events.subjects import event_subject

log = structlog.get_logger("sdv.relay")
_encoder = msgspec.json.Encoder()

_SELECT = """
SELECT global_position, tx_id::text AS tx_id, stream_id, version, event_id, type, schema_version,
       data, metadata, occurred_at
FROM {schema}.events AS e
WHERE (e.tx_id, e.global_position) > ($1::text::xid8, $2)
  AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY e.tx_id, e.global_position
LIMIT $3
"""
# ORDER BY must name the column `e.tx_id`: a bare `tx_id` binds to the output alias
# `tx_id::text` and sorts as text ('1000' < '999'), which reorders a stream and makes the
# checkpoint jump over lower transaction ids whenever a batch straddles 10^k.
_CHECKPOINT = """
INSERT INTO {schema}.checkpoints (name, tx_id, position, updated_at)
VALUES ($1, $2::text::xid8, $3, now())
ON CONFLICT (name) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position,
                                 updated_at = now()
"""


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    batches: int = 0


class RelayNotLeader(Exception):
    pass


def message_of(row: asyncpg.Record) -> tuple[str, bytes, dict[str, str]]:
    meta = decode_metadata(bytes(row["metadata"]))
    wire = WireEnvelope(
        event_id=row["event_id"], stream_id=row["stream_id"], version=row["version"],
        type=row["type"], schema_version=row["schema_version"], occurred_at=row["occurred_at"],
        data=msgspec.Raw(bytes(row["data"])), correlation_id=meta.correlation_id,
        causation_id=meta.causation_id, actor=meta.actor, trace=meta.trace,
        position=row["global_position"],
    )
    headers = {
        "Nats-Msg-Id": str(row["event_id"]),
        "Sdv-Type": row["type"],
        "Sdv-Stream": row["stream_id"],
        "Sdv-Version": str(row["version"]),
    }
    if meta.trace.traceparent:
        headers["traceparent"] = meta.trace.traceparent
        if meta.trace.tracestate:
            headers["tracestate"] = meta.trace.tracestate
    return event_subject(row["stream_id"], row["type"]), _encoder.encode(wire), headers


class Relay:
    def __init__(
        self,
        store: EventStore,
        js: JetStreamContext,
        *,
        name: str = "relay",
        batch_size: int = 1000,
        idle_poll_s: float = 0.25,
        ack_timeout_s: float = 10.0,
        after_publish: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.js = js
        self.name = name
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.ack_timeout_s = ack_timeout_s
        # Test seam: runs after JetStream acked a batch and before the checkpoint is written.
        self.after_publish = after_publish
        self.stats = RelayStats()
        self._wake = asyncio.Event()
        schema = store.schema
        self._select = _SELECT.format(schema=schema)
        self._checkpoint_sql = _CHECKPOINT.format(schema=schema)
        self._lock_key = (f"sdv_relay:{schema}", name)

    async def _acquire_leadership(self, conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", *self._lock_key
        ))

    async def _cursor(self, conn: asyncpg.Connection) -> tuple[str, int]:
        row = await conn.fetchrow(
            f"SELECT tx_id::text AS tx_id, position FROM {self.store.schema}.checkpoints "
            "WHERE name = $1", self.name,
        )
        return (row["tx_id"], row["position"]) if row else ("0", 0)

    async def publish_batch(self, conn: asyncpg.Connection) -> int:
        """Publish the next batch after the checkpoint; returns how many events went out."""
        tx_id, position = await self._cursor(conn)
        rows = await conn.fetch(self._select, tx_id, position, self.batch_size)
        if not rows:
            return 0
        futures = []
        for row in rows:
            subject, payload, headers = message_of(row)
            futures.append(await self.js.publish_async(subject, payload, headers=headers))
        acks = await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout_s)
        duplicates = sum(1 for ack in acks if ack.duplicate)
        if self.after_publish is not None:
            await self.after_publish(len(rows))
        last = rows[-1]
        await conn.execute(self._checkpoint_sql, self.name, last["tx_id"], last["global_position"])
        self.stats.published += len(rows) - duplicates
        self.stats.duplicates += duplicates
        self.stats.batches += 1
        return len(rows)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; stand by while another relay holds leadership."""
        while not stop.is_set():
            try:
                await self._lead(stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("relay_error_retrying", relay=self.name, error=repr(exc))
                await sleep_or_stop(stop, 1.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        # Leaving the session releases the advisory lock (and LISTEN): leadership ends with it.
        async with pooled_session(self.store.pool) as conn:
            if not await self._acquire_leadership(conn):
                await sleep_or_stop(stop, 1.0)
                return
            log.info("relay_leading", relay=self.name, schema=self.store.schema)
            await conn.add_listener(self.store.notify_channel, self._on_notify)
            try:
                while not stop.is_set():
                    self._wake.clear()
                    count = await self.publish_batch(conn)
                    if count < self.batch_size:
                        await wait_any(self._wake, stop, timeout=self.idle_poll_s)
            finally:
                if not conn.is_closed():
                    await conn.remove_listener(self.store.notify_channel, self._on_notify)

