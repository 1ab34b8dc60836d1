"""Dead letters: undecodable messages between valid events go to `sdv.dlq.<subject>` (SDV_DLQ)
with the reason in headers, and the consumer runner goes on with the next message. (An event of
a type this build does not know is not dead-lettered in a services' category: the consumer stops
at it, see test_consumers.py.)"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from sdv_events.codec import encode
from sdv_events.envelope import Envelope
from sdv_events.ids import uuid7
from sdv_events.processing import ConsumerRunner
from sdv_events.provisioning import DLQ_STREAM, EVENTS_STREAM
from sdv_events.registry import event
from sdv_events.store import EventStore
from sdv_events.subjects import event_subject


@event("dltest.Paid")
class Paid(msgspec.Struct, frozen=True):
    amount: int


PAID = "dltest.Paid.v1"


class Payments:
    """Read model: every valid payment, one row each."""

    name = "payments"
    filter_subjects = ("sdv.evt.pay.>",)

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.payments"

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        assert isinstance(event.data, Paid)
        await conn.execute(
            f"INSERT INTO {self.table} (stream_id, version, amount) VALUES ($1, $2, $3)",
            event.stream_id, event.version, event.data.amount,
        )

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        await conn.execute(
            f"CREATE TABLE {self.table} (stream_id text, version int, amount int, "
            "PRIMARY KEY (stream_id, version))"
        )

    async def rows(self, pool: asyncpg.Pool) -> list[tuple[str, int, int]]:
        records = await pool.fetch(
            f"SELECT stream_id, version, amount FROM {self.table} ORDER BY stream_id, version"
        )
        return [(r["stream_id"], r["version"], r["amount"]) for r in records]


def envelope(stream_id: str, version: int, amount: int) -> dict[str, Any]:
    """The wire form of a valid event, as builtins so a test can break one field."""
    env = Envelope(
        event_id=uuid7(), stream_id=stream_id, version=version, type=PAID, schema_version=1,
        occurred_at=datetime.now(UTC), data=Paid(amount=amount), position=version,
    )
    return msgspec.json.decode(encode(env))


async def publish(js: JetStreamContext, stream_id: str, type_name: str, payload: bytes,
                  msg_id: str) -> str:
    subject = event_subject(stream_id, type_name)
    ack = await js.publish(subject, payload, headers={
        "Nats-Msg-Id": msg_id, "Sdv-Stream": stream_id, "Sdv-Type": type_name,
    })
    assert ack.stream == EVENTS_STREAM
    assert not ack.duplicate
    return subject


async def read_all(js: JetStreamContext, stream: str, subjects: str, *, timeout: float = 10.0) -> list[Msg]:
    total = int((await js.stream_info(stream)).state.messages)
    msgs: list[Msg] = []
    if total == 0:
        return msgs
    sub = await js.subscribe(subjects, stream=stream, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    deadline = time.monotonic() + timeout
    try:
        while len(msgs) < total:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"read {len(msgs)} of {total} messages of {stream}"
            msgs.append(await sub.next_msg(timeout=remaining))
    finally:
        await sub.unsubscribe()
    return msgs


async def test_undecodable_messages_are_dead_lettered_and_processing_goes_on(
    store: EventStore, nc: NatsClient
) -> None:
    js = nc.jetstream()
    projection = Payments(store.schema)
    async with store.pool.acquire() as conn:
        await projection.reset(conn)

    valid: list[tuple[str, int, int]] = []
    bad: list[tuple[str, bytes, str, str]] = []  # subject, payload, reason, path

    async def good(stream_id: str, version: int, amount: int) -> None:
        env = envelope(stream_id, version, amount)
        await publish(js, stream_id, PAID, msgspec.json.encode(env), env["event_id"])
        valid.append((stream_id, version, amount))

    async def broken(stream_id: str, type_name: str, payload: bytes, reason: str, path: str) -> None:
        subject = await publish(js, stream_id, type_name, payload, str(uuid7()))
        bad.append((subject, payload, reason, path))

    await good("pay-1", 1, 10)
    await broken("pay-1", PAID, b"\x00\xff{not json at all", "malformed", "$")
    await good("pay-2", 1, 20)
    await good("pay-1", 2, 40)

    # A body that does not decode: dead-lettered, and its version counts as consumed.
    wrong_body = envelope("pay-3", 1, 50)
    wrong_body["data"]["amount"] = "fifty"
    await broken("pay-3", PAID, msgspec.json.encode(wrong_body), "wrong_type", "$.data.amount")
    await good("pay-3", 2, 60)

    wrong_envelope = envelope("pay-3", 3, 70)
    wrong_envelope["version"] = "two"
    await broken("pay-3", PAID, msgspec.json.encode(wrong_envelope), "wrong_type", "$.version")
    await good("pay-3", 3, 80)
    await good("pay-4", 1, 90)

    tail = int((await js.stream_info(EVENTS_STREAM)).state.last_seq)
    assert tail == len(valid) + len(bad) == 9

    runner = ConsumerRunner(store.pool, store.schema, js, projection, batch_size=3,
                            fetch_timeout_s=0.2)
    assert await asyncio.wait_for(runner.catch_up(), 30) == "caught_up"

    # Every valid event is in the read model, the ones after each bad message included.
    assert await projection.rows(store.pool) == sorted(valid)
    assert runner.stats.applied == len(valid)
    assert runner.stats.dead_lettered == len(bad)
    assert await runner.pending() == 0

    dead = await read_all(js, DLQ_STREAM, "sdv.dlq.>")
    assert len(dead) == len(bad)
    for msg, (subject, payload, reason, path) in zip(dead, bad, strict=True):
        assert msg.subject == f"sdv.dlq.{subject}"
        assert msg.data == payload
        assert msg.headers is not None
        assert msg.headers["Sdv-Dlq-Reason"] == reason, msg.headers
        assert msg.headers["Sdv-Dlq-Path"] == path, msg.headers
        assert msg.headers["Sdv-Dlq-Subject"] == subject
        assert msg.headers["Sdv-Dlq-Consumer"] == runner.durable
        assert msg.headers["Sdv-Dlq-Detail"]
        assert msg.headers["Sdv-Stream"] == subject.split(".")[2] + "-" + subject.split(".")[3]

    # Replaying everything (model and ledger wiped) rebuilds the same model and dead-letters
    # nobody twice.
    async with store.pool.acquire() as conn:
        await projection.reset(conn)
        await conn.execute(f"DELETE FROM {store.schema}.consumer_streams; "
                           f"DELETE FROM {store.schema}.consumer_positions")
    replay = ConsumerRunner(store.pool, store.schema, js, projection, batch_size=4,
                            fetch_timeout_s=0.2)
    assert await asyncio.wait_for(replay.catch_up(), 30) == "caught_up"
    assert await projection.rows(store.pool) == sorted(valid)
    assert replay.stats.dead_lettered == len(bad)
    assert int((await js.stream_info(DLQ_STREAM)).state.messages) == len(bad)
