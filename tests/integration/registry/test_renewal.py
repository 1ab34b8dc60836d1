"""Renewal over the device's own connection (`sdv.renew.<device_id>`): the shared enrolment
credential is for the first enrolment only, and a device the registry refuses gets nothing."""

from __future__ import annotations

import asyncio
import time

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from sdv_events import enrolment
from sdv_events.auth import decode_jwt, device_permissions, raw_creds, renew_subject, seed_of
from sdv_events.auth.creds import format_creds
from sdv_events.bus import Forbidden
from sdv_events.bus.rpc import Reply, ReplyError, error_from_reply
from sdv_events.codec import decode_as, encode
from sdv_events.schemas.devices import (
    AcceptDevice,
    Announce,
    AnnounceReply,
    DecommissionDevice,
    DeviceView,
    GetDevice,
)

from .conftest import Agent, Harness, capabilities


async def _accepted(registry: Harness, device_id: str) -> tuple[Agent, AnnounceReply, NatsClient]:
    agent = registry.agent(device_id)
    await agent.announce()
    await registry.call("accept", AcceptDevice(device_id), DeviceView)
    reply = await agent.announce()
    return agent, reply, await agent.connect(reply, allow_reconnect=False)


async def _refused(agent: Agent, nc: NatsClient, device_id: str) -> None:
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await enrolment.renew(nc, agent.key, device_id, capabilities(), timeout=1.0)
    subject = renew_subject(device_id).lower()
    for _ in range(40):
        if any("permissions violation" in e and subject in e for e in agent.errors):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no permissions violation for {subject}: {agent.errors}")


async def test_renewal_uses_the_devices_own_credentials_and_a_refused_device_cannot_renew(
    registry: Harness,
) -> None:
    agent, first, nc = await _accepted(registry, "orin-200")
    assert first.credentials is not None
    renewed = await enrolment.renew(nc, agent.key, "orin-200", capabilities(agent_version="0.2.0"))
    assert renewed.status == "accepted"
    assert renewed.credentials is not None
    claims = decode_jwt(renewed.credentials.jwt)
    assert claims["sub"] == agent.public_key
    assert claims["nats"]["issuer_account"] == registry.trust.devices_account_key
    assert renewed.credentials.expires_at >= first.credentials.expires_at
    view = await registry.call("get", GetDevice("orin-200"), DeviceView)
    assert view.capabilities is not None
    assert view.capabilities.agent_version == "0.2.0"  # a renewal reports what the device runs now

    # Neither the shared enrolment user nor another device may renew orin-200.
    enrol = await agent.enrol_connection()
    try:
        await _refused(agent, enrol, "orin-200")
    finally:
        await enrol.close()
    other, _, other_nc = await _accepted(registry, "orin-201")
    try:
        await _refused(other, other_nc, "orin-200")
    finally:
        await other_nc.close()

    # A signature made for an announce does not count as a renewal's.
    body = Announce(device_id="orin-200", public_key=agent.public_key, capabilities=capabilities())
    challenge = await _request_sealed(nc, agent, body)
    assert challenge.status == "challenge"
    as_announce = enrolment.sign_announce(msgspec.structs.replace(body, nonce=challenge.nonce), agent.key)
    with pytest.raises(Forbidden, match="signature"):
        await _request_sealed(nc, agent, as_announce)

    # Decommissioned: its connection is closed and the JWT refused; and even a JWT the server
    # would still take (minted after the revocation) gets no renewal from the registry.
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    await agent.connect(renewed, allow_reconnect=False, closed_cb=on_closed)
    await registry.call("decommission", DecommissionDevice("orin-200", "sold"), DeviceView)
    await asyncio.wait_for(closed.wait(), 5)
    await asyncio.sleep(1.1)  # a JWT issued in the revocation's second still counts as revoked
    jwt = registry.trust.device_jwt(agent.public_key, "orin-200", device_permissions("orin-200"),
                                    expires_at=int(time.time()) + 60)
    still = await nats.connect(registry.url, user_credentials=raw_creds(format_creds(jwt, seed_of(agent.key))),
                               inbox_prefix="_INBOX.orin-200", allow_reconnect=False)
    try:
        refused = await enrolment.renew(still, agent.key, "orin-200", capabilities())
    finally:
        await still.close()
    assert (refused.status, refused.credentials) == ("decommissioned", None)
    await nc.close()


async def _request_sealed(nc: NatsClient, agent: Agent, body: Announce) -> AnnounceReply:
    """One request on the renewal subject, the reply opened with the agent's key."""
    msg = await nc.request(renew_subject(body.device_id), encode(body), timeout=5)
    data = msg.data
    if (msg.headers or {}).get(enrolment.SEALED_HEADER) == enrolment.SEALED_SCHEME:
        data = enrolment.open_sealed(agent.key, data)
    reply: Reply = decode_as(data, Reply)  # type: ignore[arg-type]
    if isinstance(reply, ReplyError):
        raise error_from_reply(reply)
    return decode_as(bytes(reply.result), AnnounceReply)
