"""Enrolment proves possession of the device's key (issue 11, point 4), attacked as the issue
did, against operator-mode NATS and a real registry: announcing under someone else's key,
overwriting a known device's capabilities, squatting an id, reading other devices' enrolment
replies on `_ENROL.>`, flooding announcements."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nacl.exceptions
import pytest

from sdv_events.auth import Trust, decode_jwt
from sdv_events.bus import Conflict, Forbidden, RateLimited
from sdv_events.codec import encode
from sdv_events.enrolment import SEALED_HEADER, key_fingerprint, open_sealed, sign_announce
from sdv_events.schemas.devices import (
    AcceptDevice,
    Announce,
    CountDevices,
    DecommissionDevice,
    DeviceCounts,
    DeviceView,
    GetDevice,
    RejectDevice,
)
from sdv_events.servers import NatsServer
from sdv_events.store import EventStore

from .conftest import Harness, capabilities, registry_settings, running_registry


async def _events(registry: Harness, device_id: str) -> list[str]:
    return [e.type.split(".")[1] for e in await registry.store.read_stream(f"device-{device_id}")]


async def test_announce_without_the_devices_key_is_refused(registry: Harness) -> None:
    genuine = registry.agent("orin-100")
    await genuine.announce()
    await registry.call("accept", AcceptDevice("orin-100"), DeviceView)
    before = await _events(registry, "orin-100")
    attacker = registry.agent("orin-100")
    # The attacker gets a nonce for the id (announcing its own key: a challenge names the genuine
    # key is sealed to that key, unreadable to the attacker).
    challenge = await attacker.announce_raw(encode(Announce(
        device_id="orin-100", public_key=attacker.public_key, capabilities=capabilities())))
    assert (challenge.status, challenge.credentials) == ("challenge", None)
    with pytest.raises(nacl.exceptions.CryptoError):
        await attacker.announce_raw(encode(Announce(
            device_id="orin-100", public_key=genuine.public_key, capabilities=capabilities())))

    # The genuine public key, signed with the attacker's key: refused (the refusal, too, is
    # sealed to the key the announce names; the test reads it with that key).
    forged = sign_announce(Announce(device_id="orin-100", public_key=genuine.public_key,
                                    capabilities=capabilities(memory_mb=1), nonce=challenge.nonce),
                           attacker.key)
    with pytest.raises(Forbidden, match="signature"):
        await attacker.announce_raw(encode(forged), reader=genuine.key)
    unsigned = msgspec.structs.replace(forged, signature=None)
    assert (await attacker.announce_raw(encode(unsigned), reader=genuine.key)).status == "challenge"
    # A nonce the registry never issued, correctly signed by the genuine key: refused too.
    made_up = sign_announce(Announce(device_id="orin-100", public_key=genuine.public_key,
                                     capabilities=capabilities(), nonce="1700000000.00"), genuine.key)
    with pytest.raises(Forbidden, match="nonce"):
        await attacker.announce_raw(encode(made_up), reader=genuine.key)
    # A nonce issued for another id does not sign this one.
    other = await attacker.announce_raw(encode(Announce(
        device_id="orin-101", public_key=attacker.public_key, capabilities=capabilities()),
    ), subject="sdv.announce.orin-101")
    moved = sign_announce(Announce(device_id="orin-100", public_key=genuine.public_key,
                                   capabilities=capabilities(), nonce=other.nonce), genuine.key)
    with pytest.raises(Forbidden, match="nonce"):
        await attacker.announce_raw(encode(moved), reader=genuine.key)

    assert await _events(registry, "orin-100") == before
    view = await registry.call("get", GetDevice("orin-100"), DeviceView)
    assert view.capabilities.memory_mb == 8192


async def test_an_existing_devices_capabilities_cannot_be_overwritten_by_another_key(
        registry: Harness) -> None:
    genuine = registry.agent("orin-110")
    await genuine.announce()
    await registry.call("accept", AcceptDevice("orin-110"), DeviceView)
    attacker = registry.agent("orin-110")
    with pytest.raises(Conflict, match="another public key"):
        await attacker.announce(runtimes=["native"], hardware_type="linux-generic")
    view = await registry.call("get", GetDevice("orin-110"), DeviceView)
    assert (view.status, view.public_key, view.capabilities.hardware_type,
            view.capabilities.runtimes) == ("accepted", genuine.public_key, "jetson-orin",
                                            ["docker", "native"])
    # Its own key still may: renewal with new capabilities is signed by the registered key.
    renewed = await genuine.announce(storage_mb=1024)
    assert renewed.status == "accepted"
    assert renewed.credentials is not None
    view = await registry.call("get", GetDevice("orin-110"), DeviceView)
    assert view.capabilities.storage_mb == 1024


async def test_after_rejecting_a_squatter_the_real_device_is_admitted_with_its_own_key(
        registry: Harness) -> None:
    squatter = registry.agent("orin-120")
    real = registry.agent("orin-120")
    assert (await squatter.announce()).status == "pending"
    with pytest.raises(Conflict):
        await real.announce()  # the id is taken while the squatter is pending
    pending = await registry.call("get", GetDevice("orin-120"), DeviceView)
    assert pending.key_fingerprint == key_fingerprint(squatter.public_key)

    await registry.call("reject", RejectDevice("orin-120", "not ours"), DeviceView)
    assert (await real.announce()).status == "pending"  # the rejected key no longer holds the id
    view = await registry.call("get", GetDevice("orin-120"), DeviceView)
    assert (view.status, view.public_key) == ("pending", real.public_key)
    again = await squatter.announce()
    assert (again.status, again.credentials) == ("rejected", None)

    # The operator accepts the key they saw; a key that changed since is not admitted.
    with pytest.raises(Conflict, match="now announces key"):
        await registry.call("accept", AcceptDevice("orin-120", "", key_fingerprint(squatter.public_key)),
                            DeviceView)
    accepted = await registry.call("accept", AcceptDevice("orin-120", "", view.key_fingerprint),
                                   DeviceView)
    assert (accepted.status, accepted.public_key) == ("accepted", real.public_key)
    reply = await real.announce()
    assert reply.credentials is not None
    assert decode_jwt(reply.credentials.jwt)["sub"] == real.public_key
    assert (await squatter.announce()).status == "rejected"
    nc = await real.connect(reply)
    await nc.close()


async def test_a_decommissioned_id_can_be_enrolled_again_only_with_a_new_key(registry: Harness) -> None:
    old = registry.agent("orin-130")
    await old.announce(token=None)
    await registry.call("accept", AcceptDevice("orin-130"), DeviceView)
    await registry.call("decommission", DecommissionDevice("orin-130", "sold"), DeviceView)
    assert (await old.announce()).status == "decommissioned"
    fresh = registry.agent("orin-130")
    assert (await fresh.announce()).status == "pending"
    view = await registry.call("get", GetDevice("orin-130"), DeviceView)
    assert (view.status, view.public_key) == ("pending", fresh.public_key)
    assert (await old.announce()).status == "rejected"  # the old key stays refused


async def test_enrolment_replies_carry_nothing_secret(registry: Harness) -> None:
    """Every enrolling device shares one credential, so `_ENROL.>` cannot be closed to them
    (NATS permissions are per user); what they can read there is ciphertext sealed to the
    announcing device's key."""
    eavesdropper = registry.agent("spy-1")
    spy_nc = await eavesdropper.enrol_connection()
    seen = await spy_nc.subscribe("_ENROL.>")
    await spy_nc.flush()

    victim = registry.agent("orin-140")
    await victim.announce()
    await registry.call("accept", AcceptDevice("orin-140"), DeviceView)
    reply = await victim.announce()
    assert reply.credentials is not None
    jwt = reply.credentials.jwt

    captured = []
    while True:
        try:
            captured.append(await seen.next_msg(timeout=1))
        except Exception:  # nats.errors.TimeoutError: nothing more
            break
    await spy_nc.close()
    assert len(captured) == 4  # two challenges, two signed announces: the spy did see them
    for msg in captured:
        assert (msg.headers or {}).get(SEALED_HEADER) == "x25519-sealedbox"
        for secret in (b"orin-140", jwt.encode(), jwt.split(".")[1].encode()[:40], b"accepted",
                       b"pending", b"status"):
            assert secret not in msg.data
        with pytest.raises(nacl.exceptions.CryptoError):
            open_sealed(eavesdropper.key, msg.data)
        assert b"orin-140" in open_sealed(victim.key, msg.data)


@pytest.fixture
async def strict_registry(auth_nats: NatsServer, database_url: str, schema: str, trust: Trust,
                          tmp_path: Path, store: EventStore) -> AsyncIterator[Harness]:
    import nats

    from sdv_events.auth import raw_creds
    from sdv_events.bus import CommandClient

    settings = registry_settings(auth_nats.url, database_url, schema, trust, tmp_path,
                                 announce_per_device_rate=0.5, announce_per_device_burst=4,
                                 announce_global_rate=2.0, announce_global_burst=20)
    async with running_registry(settings):
        nc = await nats.connect(auth_nats.url, user_credentials=raw_creds(trust.service_creds("operator")))
        yield Harness(auth_nats.url, trust, CommandClient(nc, actor="operator:test"), store, settings,
                      auth_nats)
        await nc.close()


async def test_announce_flood_is_rate_limited(strict_registry: Harness) -> None:
    registry = strict_registry
    # One id hammered: its bucket empties, the rest are refused with a time to wait.
    hammer = registry.agent("orin-150")
    body = encode(Announce(device_id="orin-150", public_key=hammer.public_key,
                           capabilities=capabilities()))
    outcomes = await asyncio.gather(*(hammer.announce_raw(body) for _ in range(10)),
                                    return_exceptions=True)
    limited = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(limited) >= 5, outcomes
    assert 0 < float(limited[0].details["retry_after_s"]) <= 2.0

    # Fifty fresh ids in a burst (the issue made 50 pending devices in 0.1 s): the global bucket
    # lets through what it holds, refuses the rest, and nothing is stored for them.
    flood = [registry.agent(f"flood-{i:02d}") for i in range(50)]
    results = await asyncio.gather(*(a.announce() for a in flood), return_exceptions=True)
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(refused) >= 30, results
    counts = await registry.call("count", CountDevices(status="pending"), DeviceCounts)
    assert counts.total <= 16
    assert all(not isinstance(r, Exception) or isinstance(r, RateLimited) for r in results)

    # A device that waits as told gets in.
    await asyncio.sleep(float(refused[0].details["retry_after_s"]) + 1.0)
    late = registry.agent("orin-151")
    assert (await late.announce()).status == "pending"
