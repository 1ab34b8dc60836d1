"""`SDV_EVENTS` on a real NATS server: explicit retention, and no one may delete a message or
purge the stream (the stores in PostgreSQL are the record; the bus only ages old events out)."""

from __future__ import annotations

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError

from sdv_events.provisioning import EVENTS_STREAM, EventsRetention, provision

DAY = 86_400.0


async def test_sdv_events_refuses_message_delete_and_purge(nc: NatsClient) -> None:
    js = nc.jetstream()
    ack = await js.publish("sdv.evt.rollout.r1.RolloutCreated", b"{}")

    with pytest.raises(APIError, match="message delete not permitted"):
        await js.delete_msg(EVENTS_STREAM, ack.seq)
    with pytest.raises(APIError, match="purge not permitted"):
        await js.purge_stream(EVENTS_STREAM)
    with pytest.raises(APIError, match="purge not permitted"):
        await js.purge_stream(EVENTS_STREAM, subject="sdv.evt.rollout.>")

    info = await js.stream_info(EVENTS_STREAM)
    assert info.state.messages == 1
    assert (info.config.deny_delete, info.config.deny_purge) == (True, True)
    # Defaults: generous, explicit, oldest dropped first.
    assert (info.config.max_age, info.config.max_bytes) == (30 * DAY, 10 << 30)


async def test_an_existing_sdv_events_gets_retention_and_deny_flags_and_keeps_its_messages(
    fresh_nats_url: str,
) -> None:
    nc = await nats.connect(fresh_nats_url)
    js = nc.jetstream()
    try:
        # SDV_EVENTS as provisioned before: no limits, deletes and purges allowed.
        await js.add_stream(StreamConfig(
            name=EVENTS_STREAM, subjects=["sdv.evt.>"], retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE, duplicate_window=600.0))
        await js.publish("sdv.evt.device.d1.DeviceAccepted", b"{}")

        await provision(js, retention=EventsRetention(max_age_s=7 * DAY, max_bytes=1 << 30))

        info = await js.stream_info(EVENTS_STREAM)
        assert (info.config.deny_delete, info.config.deny_purge) == (True, True)
        assert (info.config.max_age, info.config.max_bytes) == (7 * DAY, 1 << 30)
        assert info.state.messages == 1
        with pytest.raises(APIError, match="purge not permitted"):
            await js.purge_stream(EVENTS_STREAM)
        # The server never lets deny_* be turned off again; provisioning logs the refusal
        # and the service runs on the stream as it is.
        with pytest.raises(APIError, match="can not cancel deny"):
            await js.update_stream(StreamConfig(
                name=EVENTS_STREAM, subjects=["sdv.evt.>"], duplicate_window=600.0))
    finally:
        await nc.close()


async def test_sdv_events_retention_comes_from_the_environment(
    fresh_nats_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SDV_EVENTS_MAX_AGE_S", "3600")
    monkeypatch.setenv("SDV_EVENTS_MAX_BYTES", str(256 << 20))
    nc = await nats.connect(fresh_nats_url)
    try:
        await provision(nc.jetstream())
        config = (await nc.jetstream().stream_info(EVENTS_STREAM)).config
        assert (config.max_age, config.max_bytes) == (3600.0, 256 << 20)
    finally:
        await nc.close()


def test_bad_retention_settings_are_refused_with_the_variable_named() -> None:
    with pytest.raises(ValueError, match="SDV_EVENTS_MAX_BYTES"):
        EventsRetention.from_env({"SDV_EVENTS_MAX_BYTES": "ten gigs"})
    with pytest.raises(ValueError, match="SDV_EVENTS_MAX_AGE_S='0': Input should be greater than 0"):
        EventsRetention.from_env({"SDV_EVENTS_MAX_AGE_S": "0"})


async def test_provisioning_goes_on_when_the_server_refuses_to_update_a_stream(
    fresh_nats_url: str,
) -> None:
    nc = await nats.connect(fresh_nats_url)
    js = nc.jetstream()
    try:
        # A storage type cannot change in place: the update is refused, the stream stays usable.
        await js.add_stream(StreamConfig(name=EVENTS_STREAM, subjects=["sdv.evt.>"],
                                         storage=StorageType.MEMORY))
        await provision(js)
        assert (await js.stream_info(EVENTS_STREAM)).config.storage == StorageType.MEMORY
        await js.stream_info("SDV_DLQ")  # the rest was provisioned
    finally:
        await nc.close()
