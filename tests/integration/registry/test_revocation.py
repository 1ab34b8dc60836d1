"""Revocation the NATS server enforces: a decommissioned or rejected device's live connection
is closed and its JWT refused afterwards; expiry is enforced too."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.errors import NoServersError

from sdv_events.auth import Role, new_keypair, public_key, raw_creds, seed_of
from sdv_events.auth.creds import format_creds
from sdv_events.auth.permissions import device_permissions
from sdv_events.bus import CommandClient
from sdv_events.schemas.devices import (
    AcceptDevice,
    DecommissionDevice,
    DeviceView,
    GetRegistryStats,
    RegistryStats,
    RejectDevice,
)

from .conftest import Harness, eventually, registry_settings, running_registry


async def _connect_refused(agent, reply) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises((NoServersError, nats.errors.Error)) as caught:
        await agent.connect(reply, allow_reconnect=False, connect_timeout=2)
    return str(caught.value) + " " + " ".join(agent.errors)


async def _accepted_and_connected(registry: Harness, device_id: str):  # type: ignore[no-untyped-def]
    agent = registry.agent(device_id)
    await agent.announce()
    await registry.call("accept", AcceptDevice(device_id), DeviceView)
    reply = await agent.announce()
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await agent.connect(reply, allow_reconnect=False, closed_cb=on_closed)
    await nc.publish(f"sdv.hb.{device_id}", b"")
    await nc.flush()
    return agent, reply, nc, closed


async def test_decommission_closes_the_live_connection_and_refuses_the_jwt(registry: Harness) -> None:
    agent, reply, nc, closed = await _accepted_and_connected(registry, "orin-100")
    view = await registry.call("decommission", DecommissionDevice("orin-100", "sold"), DeviceView)
    assert view.status == "decommissioned"
    await asyncio.wait_for(closed.wait(), 5)  # the server dropped it
    assert nc.is_closed
    assert "authorization violation" in (await _connect_refused(agent, reply)).lower()
    # And announcing again gets it nothing.
    again = await agent.announce()
    assert (again.status, again.credentials) == ("decommissioned", None)


async def test_rejecting_an_accepted_device_revokes_it_and_accepting_again_restores_it(
    registry: Harness,
) -> None:
    agent, reply, _nc, closed = await _accepted_and_connected(registry, "orin-101")
    await registry.call("reject", RejectDevice("orin-101", "stolen"), DeviceView)
    await asyncio.wait_for(closed.wait(), 5)
    assert "authorization violation" in (await _connect_refused(agent, reply)).lower()

    await registry.call("accept", AcceptDevice("orin-101", "recovered"), DeviceView)
    await asyncio.sleep(1.1)  # a JWT issued in the revocation's second would still count as revoked
    fresh = await agent.announce()
    nc = await agent.connect(fresh, allow_reconnect=False)
    await nc.flush()
    assert nc.is_connected
    await nc.close()


async def test_other_devices_stay_connected_when_one_is_revoked(registry: Harness) -> None:
    _, _, keep_nc, keep_closed = await _accepted_and_connected(registry, "orin-102")
    _, _, _, gone_closed = await _accepted_and_connected(registry, "orin-103")
    await registry.call("decommission", DecommissionDevice("orin-103"), DeviceView)
    await asyncio.wait_for(gone_closed.wait(), 5)
    await keep_nc.publish("sdv.hb.orin-102", b"")
    await keep_nc.flush()
    assert keep_nc.is_connected
    assert not keep_closed.is_set()
    await keep_nc.close()


async def test_expired_device_jwt_is_disconnected_by_the_server(registry: Harness) -> None:
    key = new_keypair(Role.USER)
    jwt = registry.trust.device_jwt(public_key(key), "short-lived", device_permissions("short-lived"),
                                  expires_at=int(time.time()) + 2)
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    async def ignore(_: Exception) -> None:
        pass

    nc = await nats.connect(registry.url, user_credentials=raw_creds(format_creds(jwt, seed_of(key))),
                            allow_reconnect=False, closed_cb=on_closed, error_cb=ignore)
    assert nc.is_connected
    await asyncio.wait_for(closed.wait(), 6)
    await asyncio.sleep(1.1)  # the server refuses once now > exp, in whole seconds
    with pytest.raises((NoServersError, nats.errors.Error)):
        await nats.connect(registry.url, user_credentials=raw_creds(format_creds(jwt, seed_of(key))),
                           allow_reconnect=False, connect_timeout=2, error_cb=ignore)


async def test_revocations_are_pushed_again_after_a_nats_restart(
    auth_nats, database_url, schema, trust, tmp_path, store,  # type: ignore[no-untyped-def]
) -> None:
    """A memory resolver forgets pushed account JWTs when the server restarts; the registry's
    periodic push brings the revocation back, and the server refuses the device again."""
    settings = registry_settings(auth_nats.url, database_url, schema, trust, tmp_path,
                                 revocation_push_s=0.3)
    async with running_registry(settings):
        nc = await nats.connect(auth_nats.url, user_credentials=raw_creds(trust.service_creds()))
        registry = Harness(auth_nats.url, trust, CommandClient(nc), store, settings, auth_nats)
        agent, reply, _, closed = await _accepted_and_connected(registry, "orin-104")
        await registry.call("decommission", DecommissionDevice("orin-104"), DeviceView)
        await asyncio.wait_for(closed.wait(), 5)
        pushes = (await registry.call("stats", GetRegistryStats(), RegistryStats)).revocation_pushes

        auth_nats.stop(keep_data=True)  # same port and config: the preloaded JWT has no revocations
        auth_nats.start()

        async def refused_again() -> bool:
            try:
                device = await agent.connect(reply, allow_reconnect=False, connect_timeout=1)
            except Exception:
                return True
            await device.close()
            return False

        assert await eventually(refused_again, timeout=15)

        async def pushed_again() -> bool:
            try:  # the registry's and this client's connections may still be reconnecting
                stats = await registry.call("stats", GetRegistryStats(), RegistryStats)
            except Exception:
                return False
            return stats.revocation_pushes > pushes

        assert await eventually(pushed_again, timeout=15)
        await nc.close()
