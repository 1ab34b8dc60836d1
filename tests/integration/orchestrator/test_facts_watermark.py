"""The facts watermark on a real JetStream: the time up to which every device fact published
has been handled. It does not move past a fact that is pending or delivered but not acknowledged
(the ticker must not time a device out while its fact waits), moves once it is acknowledged,
and after the consumer (or the bus) could not be read it holds still for the reconnect grace."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig

from sdv_events.provisioning import EVENTS_STREAM
from sdv_orchestrator.adapters.facts_watermark import FactsWatermark

DURABLE = "watermark_test_facts"
FACTS = "sdv.evt.agent.*.AppHealthy"


async def facts_consumer(nc: NatsClient) -> None:
    await nc.jetstream().add_consumer(
        EVENTS_STREAM,
        ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, filter_subject=FACTS),
    )


async def test_the_watermark_waits_for_a_fact_to_be_acknowledged(nc: NatsClient) -> None:
    js = nc.jetstream()
    await facts_consumer(nc)
    watermark = FactsWatermark(js, DURABLE, grace_s=0.0)
    before = datetime.now(UTC)
    idle = await watermark()
    assert idle is not None
    assert idle >= before  # nothing pending: everything published so far is handled

    await js.publish("sdv.evt.agent.car-1.AppHealthy", b"{}")
    await js.publish("sdv.evt.rollout.r1.WaveStarted", b"{}")  # not a fact: not waited for
    for _ in range(3):
        assert await watermark() == idle  # pending, not fetched
    sub = await js.pull_subscribe_bind(DURABLE, EVENTS_STREAM)
    [msg] = await sub.fetch(1, timeout=2)
    assert await watermark() == idle  # delivered, not acknowledged (a failed batch, say)
    published = datetime.now(UTC)
    await msg.ack_sync()
    after = await watermark()
    assert after is not None
    assert after >= published
    assert watermark.status().healthy


async def test_after_the_consumer_could_not_be_read_it_holds_still_for_the_grace(
    nc: NatsClient,
) -> None:
    js = nc.jetstream()
    watermark = FactsWatermark(js, DURABLE, grace_s=0.6)
    assert await watermark() is None  # no consumer yet (a start): unknown, not "caught up"
    assert watermark.status().healthy  # a start's blip is no health problem
    await facts_consumer(nc)
    assert await watermark() is None  # within the grace: agents may still be publishing
    await asyncio.sleep(0.7)
    reached = await watermark()
    assert reached is not None

    await js.delete_consumer(EVENTS_STREAM, DURABLE)  # the bus or the consumer away
    assert await watermark() == reached
    await facts_consumer(nc)
    assert await watermark() == reached  # back, but within the grace
    await asyncio.sleep(0.7)
    moved = await watermark()
    assert moved is not None
    assert moved > reached
