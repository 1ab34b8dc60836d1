"""Relay: the event log → JetStream `SDV_EVENTS`, exactly once and in per-stream order.

The append-only `events` table is the outbox: every append already writes its rows in one
transaction, so a second outbox table would only double the writes. The relay tails the table
by position and checkpoints after JetStream acknowledged.

Why the relay never skips although positions are not drawn in commit order: a position comes
from a sequence when a row is inserted, not when its transaction commits, so transaction A may
take position 10, B position 11, and B commit first; a reader that advanced to 11 would skip 10
forever. So the relay publishes only up to `EventStore.safe_head()`: the highest position seen
once every append of this schema that was in flight when it was seen has ended (each append
holds a shared per-schema advisory lock from before it draws a position until its commit is
visible, so `pg_locks` lists them). Appends run concurrently; the relay waits only for appends
of its own schema, and only for those in flight. An earlier design compared transaction ids
with `pg_snapshot_xmin`, which is cluster-wide — an idle transaction in another database
stalled every relay — and whose ids restart in a restored cluster, so after a `pg_dump`
restore new events sat below the checkpoint forever; positions come from a sequence that
pg_dump restores. Per stream, position order is version order: `append_events` holds a
per-stream lock until commit, so version n+1 draws its position after version n committed.

Exactly once: each message carries `Nats-Msg-Id = event_id`. A relay that crashes after
publishing but before checkpointing publishes the same ids again on restart and JetStream drops
them as duplicates (within the stream's duplicate window, provisioning.DUPLICATE_WINDOW_S;
consumers also dedupe by stream version, past that window). Only one relay per store publishes
at a time: the leader holds a PostgreSQL advisory lock on the connection it also reads and
checkpoints with, so losing the connection loses leadership.

Never silently dead: every error — PostgreSQL, NATS API (a deleted stream, a leader change),
a closed connection, a payload the server refuses — is logged with its cause and retried with
backoff, and `status()` reports the relay's state and lag (events behind, age of the oldest
unpublished event), read from the table, so a stuck relay turns the service's health red.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import asyncpg
import msgspec
import structlog
from nats.js import JetStreamContext

from sdv_events.aio import sleep_or_stop, wait_any
from sdv_events.codec import WireEnvelope, decode_metadata
from sdv_events.store.postgres import EventStore, ObservedHead, pooled_session
from sdv_events.subjects import event_subject
from sdv_events.supervision import Status

log = structlog.get_logger("sdv.relay")
_encoder = msgspec.json.Encoder()

_SELECT = """
SELECT global_position, stream_id, version, event_id, type, schema_version, data, metadata,
       occurred_at
FROM {schema}.events WHERE global_position > $1 AND global_position <= $2
ORDER BY global_position LIMIT $3
"""
_CHECKPOINT = """
INSERT INTO {schema}.checkpoints (name, position, updated_at) VALUES ($1, $2, now())
ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()
"""
# A checkpoint written by the previous release's relay is a (transaction id, position) pair in
# that order: an event with a lower position but a later transaction may still be unpublished.
# Resume just below the first event that cursor had not passed (what was published since is
# deduplicated), and mark the checkpoint as a plain position (tx_id 0).
_MIGRATE = """
UPDATE {schema}.checkpoints AS c SET tx_id = '0', updated_at = now(), position = least(
    c.position,
    coalesce((SELECT min(e.global_position) - 1 FROM {schema}.events AS e
              WHERE (e.tx_id, e.global_position) > (c.tx_id, c.position)), c.position))
WHERE c.name = $1 AND c.tx_id <> '0'
RETURNING c.position
"""
# Lag, counted up to a cap so a huge backlog costs a bounded scan.
_LAG = """
SELECT count(*) AS behind, min(recorded_at) AS oldest, now() AS now FROM (
    SELECT recorded_at FROM {schema}.events WHERE global_position > $1
    ORDER BY global_position LIMIT $2) AS unpublished
"""
LAG_COUNT_CAP = 100_000


RelayState = Literal["starting", "leading", "standby", "retrying", "stopped"]


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    batches: int = 0
    errors: int = 0
    last_error: str | None = None
    # Why nothing could go out on the last try: appends of this schema still open below.
    held_back: str | None = None


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
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        stuck_after_s: float = 30.0,
        after_publish: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.js = js
        self.name = name
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.ack_timeout_s = ack_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stuck_after_s = stuck_after_s
        # Test seam: runs after JetStream acked a batch and before the checkpoint is written.
        self.after_publish = after_publish
        self.stats = RelayStats()
        self.state: RelayState = "starting"
        self._wake = asyncio.Event()
        self._safe = 0  # publish no further than this (EventStore.safe_head)
        self._position: int | None = None  # the checkpoint, while leading
        self._observed: ObservedHead | None = None  # a head waiting for its appends to end
        schema = store.schema
        self._select = _SELECT.format(schema=schema)
        self._checkpoint_sql = _CHECKPOINT.format(schema=schema)
        self._lag_sql = _LAG.format(schema=schema)
        self._migrate_sql = _MIGRATE.format(schema=schema)
        self._lock_key = (f"sdv_relay:{schema}", name)
        self._log = log.bind(relay=name, schema=schema)

    async def _acquire_leadership(self, conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", *self._lock_key
        ))

    async def checkpoint(self, conn: asyncpg.Connection | asyncpg.Pool | None = None) -> int:
        """The position of the last event JetStream acknowledged."""
        value = await (conn or self.store.pool).fetchval(
            f"SELECT position FROM {self.store.schema}.checkpoints WHERE name = $1", self.name
        )
        return int(value or 0)

    async def publish_batch(self, conn: asyncpg.Connection) -> int:
        """Publish the next batch after the checkpoint; returns how many events went out."""
        if self._position is None:  # read once per leadership; only the leader writes it
            self._position = await self.checkpoint(conn)
        position = self._position
        if self._safe <= position:
            # Bounded, so a stop never waits on someone's transaction; the same observation is
            # waited on at the next try (a fresh one could always find new appends behind it).
            if self._observed is None:
                self._observed = await self.store.observe_head(conn)
            try:
                await self.store.wait_appends(conn, self._observed, max_wait_s=1.0)
            except TimeoutError as held:
                self.stats.held_back = str(held)
                return 0
            self._safe, self._observed = self._observed.head, None
            self.stats.held_back = None
        rows = await conn.fetch(self._select, position, self._safe, self.batch_size)
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
        await conn.execute(self._checkpoint_sql, self.name, rows[-1]["global_position"])
        self._position = rows[-1]["global_position"]
        self.stats.published += len(rows) - duplicates
        self.stats.duplicates += duplicates
        self.stats.batches += 1
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; stand by while another relay holds leadership. Every
        error is logged with its cause and retried after a growing backoff."""
        failures = 0
        while not stop.is_set():
            try:
                published = await self._lead(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.state = "retrying"
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** min(failures - 1, 16))
                delay *= random.uniform(0.8, 1.2)
                self._log.error("relay_error_retrying", error=self.stats.last_error,
                                failures=failures, retry_in_s=round(delay, 2), exc_info=exc)
                await sleep_or_stop(stop, delay)
                continue
            if published:
                failures = 0
        self.state = "stopped"

    async def _lead(self, stop: asyncio.Event) -> bool:
        """Lead while the session lasts; True once a batch went out (resets the backoff)."""
        published = False
        # Leaving the session releases the advisory lock: leadership ends with it.
        async with pooled_session(self.store.pool) as conn:
            if not await self._acquire_leadership(conn):
                self.state = "standby"
                await sleep_or_stop(stop, 1.0)
                return False
            migrated = await conn.fetchval(self._migrate_sql, self.name)
            if migrated is not None:
                self._log.warning("relay_checkpoint_migrated", resume_after=migrated)
            self._log.info("relay_leading")
            self.state = "leading"
            self._position, self._observed = None, None
            unsubscribe = self.store.on_append(self._wake)
            try:
                while not stop.is_set():
                    self._wake.clear()
                    count = await self.publish_batch(conn)
                    if count:
                        published = True
                        self.stats.last_error = None
                    if count < self.batch_size:
                        await wait_any(self._wake, stop, timeout=self.idle_poll_s)
            finally:
                unsubscribe()
        return published

    async def status(self) -> Status:
        """State and lag, read from the table (so a standby or stuck relay shows it too)."""
        checkpoint = await self.checkpoint()
        row = await self.store.pool.fetchrow(self._lag_sql, checkpoint, LAG_COUNT_CAP)
        behind = int(row["behind"]) if row else 0
        age = (row["now"] - row["oldest"]).total_seconds() if row and row["oldest"] else 0.0
        detail: dict[str, int | float | str] = {
            "state": self.state, "published": self.stats.published,
            "duplicates": self.stats.duplicates, "errors": self.stats.errors,
            "behind": behind, "oldest_unpublished_age_s": round(max(age, 0.0), 3),
            "checkpoint": checkpoint,
        }
        if self.stats.last_error:
            detail["last_error"] = self.stats.last_error
        if self.stats.held_back:
            detail["held_back"] = self.stats.held_back
        if age > self.stuck_after_s:
            reason = (f"relay stuck: {behind} event(s) unpublished, the oldest for {age:.0f}s"
                      + (f" (last error: {self.stats.last_error})" if self.stats.last_error else "")
                      + (f" (held back: {self.stats.held_back})" if self.stats.held_back else ""))
            return Status(False, reason, detail)
        return Status(True, "", detail)
