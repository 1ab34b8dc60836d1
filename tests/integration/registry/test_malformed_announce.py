"""Malformed announces get a typed `invalid_request` error naming the problem, and nothing is
stored: no event in the registry's log, no device in its queries."""

from __future__ import annotations

import json

import pytest

from sdv_events.bus import InvalidRequest, NotFound
from sdv_events.codec import encode
from sdv_events.schemas.devices import Announce, DeviceView, GetDevice

from .conftest import Harness, capabilities


def _valid(agent) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(encode(Announce(device_id=agent.device_id, public_key=agent.public_key,
                                      capabilities=capabilities())))


@pytest.mark.parametrize(("case", "path"), [
    ("not json", "$"),
    ("missing capabilities", "$"),
    ("negative memory", "$.capabilities.memory_mb"),
    ("unknown runtime", "$.capabilities.runtimes[0]"),
    ("public key with a bad checksum", "$.public_key"),
    ("account key instead of a user key", "$.public_key"),
    ("device id with a dot", "$.device_id"),
    ("subject names another device", "$.device_id"),
])
async def test_malformed_announce_gets_a_typed_error_and_nothing_is_stored(
    registry: Harness, case: str, path: str
) -> None:
    from sdv_events.auth import Role, new_keypair, public_key

    agent = registry.agent("bad-1")
    body = _valid(agent)
    subject = None
    match case:
        case "not json":
            payload = b"{not json"
        case "missing capabilities":
            del body["capabilities"]
        case "negative memory":
            body["capabilities"]["memory_mb"] = -1
        case "unknown runtime":
            body["capabilities"]["runtimes"] = ["podman"]
        case "public key with a bad checksum":
            key = body["public_key"]
            body["public_key"] = key[:-1] + ("A" if key[-1] != "A" else "B")
        case "account key instead of a user key":
            body["public_key"] = "U" + public_key(new_keypair(Role.ACCOUNT))[1:]
        case "device id with a dot":
            body["device_id"] = "bad.1"
        case "subject names another device":
            subject = "sdv.announce.bad-2"
    if case != "not json":
        payload = json.dumps(body).encode()
    with pytest.raises(InvalidRequest) as caught:
        await agent.announce_raw(payload, subject)
    assert caught.value.details.get("path", "$") == path, caught.value.message
    assert [e async for e in registry.store.read_all()] == []
    for device_id in ("bad-1", "bad-2"):
        with pytest.raises(NotFound):
            await registry.call("get", GetDevice(device_id), DeviceView)


async def test_the_registry_keeps_serving_after_malformed_announces(registry: Harness) -> None:
    agent = registry.agent("good-1")
    for _ in range(3):
        with pytest.raises(InvalidRequest):
            await agent.announce_raw(b"\xff\xfe garbage")
    assert (await agent.announce()).status == "pending"
