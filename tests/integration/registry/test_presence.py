"""Presence from heartbeats on core NATS: silence → one WentOffline event, heartbeats again →
one CameOnline; heartbeats in between write nothing."""

from __future__ import annotations

import asyncio

from sdv_events.schemas.devices import AcceptDevice, DeviceView, GetDevice

from .conftest import Harness, eventually


async def _types(registry: Harness, device_id: str) -> list[str]:
    return [e.type.split(".")[1] for e in await registry.store.read_stream(f"device-{device_id}")]


async def test_heartbeat_silence_emits_went_offline_and_resumption_came_online(registry: Harness) -> None:
    agent = registry.agent("orin-200")
    await agent.announce()
    await registry.call("accept", AcceptDevice("orin-200"), DeviceView)
    nc = await agent.connect(await agent.announce())

    async def beat(seconds: float) -> None:
        for _ in range(int(seconds / 0.2)):
            await nc.publish("sdv.hb.orin-200", b"")
            await asyncio.sleep(0.2)

    await beat(1.6)  # longer than the 1 s silence limit: steady heartbeats must not flap
    assert await _types(registry, "orin-200") == [
        "DeviceAnnounced", "DeviceAccepted", "DeviceCameOnline"]
    assert (await registry.call("get", GetDevice("orin-200"), DeviceView)).online

    async def offline() -> bool:
        return (await _types(registry, "orin-200"))[-1] == "DeviceWentOffline"

    assert await eventually(offline, timeout=5)
    view = await registry.call("get", GetDevice("orin-200"), DeviceView)
    assert not view.online
    assert view.last_seen_at is not None
    went = (await registry.store.read_stream("device-orin-200"))[-1].data
    assert went.silence_s == 1.0

    await beat(0.6)
    assert (await _types(registry, "orin-200"))[3:] == ["DeviceWentOffline", "DeviceCameOnline"]
    assert (await registry.call("get", GetDevice("orin-200"), DeviceView)).online
    await nc.close()


async def test_heartbeats_of_a_device_not_accepted_write_nothing(registry: Harness) -> None:
    agent = registry.agent("orin-201")
    await agent.announce()  # pending: its heartbeats (from a service user here) change nothing
    for _ in range(5):
        await registry.ops.nc.publish("sdv.hb.orin-201", b"")
    await registry.ops.nc.flush()
    await asyncio.sleep(0.5)
    assert await _types(registry, "orin-201") == ["DeviceAnnounced"]
