"""Admission on real servers: announce → pending → accept → credentials that the NATS server
really admits and really confines; reject; pre-authorisation; the fleet token; key swaps."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import pytest

from sdv_events.auth import decode_jwt
from sdv_events.bus import Conflict, Forbidden, NotFound
from sdv_events.schemas.devices import (
    AcceptDevice,
    DeviceView,
    GetDevice,
    PreauthorizeDevice,
    RejectDevice,
)

from .conftest import FLEET_TOKEN, Harness


async def test_announce_is_pending_until_an_operator_accepts_then_credentials_connect(registry: Harness) -> None:
    agent = registry.agent("orin-001")
    first = await agent.announce()
    assert (first.status, first.credentials) == ("pending", None)
    assert first.retry_after_s > 0
    view = await registry.call("get", GetDevice("orin-001"), DeviceView)
    assert (view.status, view.public_key, view.capabilities.hardware_type) == (
        "pending", agent.public_key, "jetson-orin")

    accepted = await registry.call("accept", AcceptDevice("orin-001", "looks right"), DeviceView)
    assert (accepted.status, accepted.admitted_by) == ("accepted", "operator")
    reply = await agent.announce()
    assert reply.status == "accepted"
    assert reply.credentials is not None
    claims = decode_jwt(reply.credentials.jwt)
    assert claims["sub"] == agent.public_key
    assert claims["nats"]["issuer_account"] == registry.trust.devices_account_key
    assert abs(claims["exp"] - (time.time() + registry.settings.credential_ttl_s)) < 60
    nc = await agent.connect(reply)
    await nc.publish("sdv.hb.orin-001", b"")
    await nc.flush()
    await nc.close()
    assert agent.errors == []


async def _denied(agent_errors: list[str], action, subject: str) -> None:  # type: ignore[no-untyped-def]
    """The server refuses: nats-py reports the permissions violation asynchronously."""
    before = len(agent_errors)
    await action()
    for _ in range(40):
        if any("permissions violation" in e and subject.lower() in e for e in agent_errors[before:]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no permissions violation for {subject!r}: {agent_errors[before:]}")


async def test_device_credentials_allow_only_the_devices_own_subjects(registry: Harness) -> None:
    agent = registry.agent("orin-002")
    await agent.announce()
    await registry.call("accept", AcceptDevice("orin-002"), DeviceView)
    nc = await agent.connect(await agent.announce())
    ops_nc = registry.ops.nc
    kv = await ops_nc.jetstream().key_value("sdv_desired")
    await kv.put("orin-002", b'{"apps": []}')
    await kv.put("orin-003", b'{"secret": true}')

    # Allowed: its own ops subject (and replying to it), heartbeat, facts, its own desired key.
    async def on_op(msg) -> None:  # type: ignore[no-untyped-def]
        await msg.respond(b"paused")

    await nc.subscribe("sdv.device.orin-002.ops.>", cb=on_op)
    await nc.flush()
    # The device's interest reaches the ops account through the server's import: allow it a
    # moment to propagate (seen: "no responders" right after the flush under load).
    for attempt in range(50):
        try:
            reply = await ops_nc.request("sdv.device.orin-002.ops.pause", b"", timeout=2)
            break
        except nats.errors.NoRespondersError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)
    assert reply.data == b"paused"
    own = await nc.request("$JS.API.DIRECT.GET.KV_sdv_desired.$KV.sdv_desired.orin-002", b"", timeout=2)
    assert own.data == b'{"apps": []}'
    await nc.publish("sdv.hb.orin-002", b"")
    await nc.publish("sdv.evt.agent.orin-002.AppStarted", b"{}")
    await nc.flush()
    assert agent.errors == []

    # Refused by the server: other devices' subjects, service events, wide wildcards, other keys.
    async def pub(subject: str) -> None:
        await nc.publish(subject, b"x")
        await nc.flush()

    async def sub(subject: str) -> None:
        await nc.subscribe(subject)
        await nc.flush()

    for subject in ["sdv.hb.orin-003", "sdv.evt.agent.orin-003.AppStarted",
                    "sdv.evt.device.orin-002.DeviceAccepted", "sdv.cmd.registry.accept",
                    "$JS.API.DIRECT.GET.KV_sdv_desired.$KV.sdv_desired.orin-003",
                    "$KV.sdv_desired.orin-002"]:
        await _denied(agent.errors, lambda s=subject: pub(s), subject)
    for subject in ["sdv.device.orin-003.ops.>", "sdv.hb.*", "_INBOX.>", "_INBOX.orin-003.>",
                    "sdv.evt.>", ">"]:
        await _denied(agent.errors, lambda s=subject: sub(s), subject)
    await nc.close()


async def test_enrolment_credential_can_only_announce(registry: Harness) -> None:
    import nats

    from sdv_events.auth import ENROL_INBOX_PREFIX, raw_creds

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(registry.url, user_credentials=raw_creds(registry.trust.enrol_creds()),
                            inbox_prefix=ENROL_INBOX_PREFIX, error_cb=on_error)

    async def pub(subject: str) -> None:
        await nc.publish(subject, b"x")
        await nc.flush()

    async def sub(subject: str) -> None:
        await nc.subscribe(subject)
        await nc.flush()

    await _denied(errors, lambda: pub("sdv.hb.orin-009"), "sdv.hb.orin-009")
    await _denied(errors, lambda: pub("sdv.cmd.registry.accept"), "sdv.cmd.registry.accept")
    await _denied(errors, lambda: sub("sdv.announce.*"), "sdv.announce.*")
    await _denied(errors, lambda: sub("_INBOX.>"), "_INBOX.>")
    await nc.close()


async def test_rejected_device_gets_no_credentials_and_is_told_so(registry: Harness) -> None:
    agent = registry.agent("proto-7")
    await agent.announce(hardware_type="automotive-prototype")
    rejected = await registry.call("reject", RejectDevice("proto-7", "unknown hardware"), DeviceView)
    assert rejected.status == "rejected"
    reply = await agent.announce(hardware_type="automotive-prototype")
    assert (reply.status, reply.credentials) == ("rejected", None)
    events = [e.type for e in await registry.store.read_stream("device-proto-7")]
    assert events == ["registry.DeviceAnnounced.v1", "registry.DeviceRejected.v1"]


async def test_another_key_for_a_known_device_is_refused(registry: Harness) -> None:
    genuine = registry.agent("orin-010")
    await genuine.announce()
    impostor = registry.agent("orin-010")
    with pytest.raises(Conflict, match="another public key"):
        await impostor.announce()
    view = await registry.call("get", GetDevice("orin-010"), DeviceView)
    assert view.public_key == genuine.public_key


async def test_preauthorised_device_is_admitted_at_once_only_with_its_token(registry: Harness) -> None:
    token = "device-token-orin-020-abcdef"
    view = await registry.call("preauthorize", PreauthorizeDevice("orin-020", token, {"env": "test"}),
                               DeviceView)
    assert view.status == "preauthorized"
    agent = registry.agent("orin-020")
    with pytest.raises(Forbidden, match="pre-authorised"):
        await agent.announce(token="wrong-token-0000000000")
    reply = await agent.announce(token=token)
    assert reply.status == "accepted"
    assert reply.credentials is not None
    view = await registry.call("get", GetDevice("orin-020"), DeviceView)
    assert (view.admitted_by, view.labels) == ("preauthorized", {"env": "test"})
    nc = await agent.connect(reply)
    await nc.close()


async def test_fleet_token_admits_a_new_device_at_once(registry: Harness) -> None:
    agent = registry.agent("generic-1")
    reply = await agent.announce(token=FLEET_TOKEN, hardware_type="linux-generic")
    assert reply.status == "accepted"
    assert reply.credentials is not None
    assert (await registry.call("get", GetDevice("generic-1"), DeviceView)).admitted_by == "fleet_token"
    other = registry.agent("generic-2")
    assert (await other.announce(token="not-the-fleet-token-000")).status == "pending"


async def test_unknown_device_cannot_be_accepted(registry: Harness) -> None:
    with pytest.raises(NotFound):
        await registry.call("accept", AcceptDevice("nobody"), DeviceView)
