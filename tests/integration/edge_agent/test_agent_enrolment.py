"""Enrolment and per-device permissions: an operator-mode NATS server (decentralized JWT auth),
the agent announcing over the shared enrolment user, and a stand-in registry (a plain responder
in this test, issuing real device JWTs with the suite's device permissions)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.msg import Msg

from sdv_events.auth import Trust, device_inbox_prefix, device_permissions, render_server_config
from sdv_events.bus.rpc import ReplyOk
from sdv_events.codec import decode_as, encode
from sdv_events.schemas.devices import Announce, AnnounceReply, DeviceCredentials
from sdv_events.servers import NatsServer


@pytest.fixture
def secured(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, Trust, Path, Path]]:
    trust = Trust.generate()
    server = NatsServer(config_text=render_server_config(trust)).start()
    service = tmp_path / "service.creds"
    service.write_text(trust.service_creds())
    enrol = tmp_path / "enrol.creds"
    enrol.write_text(trust.enrol_creds())
    try:
        yield server, trust, service, enrol
    finally:
        server.stop()


async def test_stand_in_registry_enrols_the_agent_which_then_works_under_device_permissions(
    secured: tuple[NatsServer, Trust, Path, Path], harness: Any, tmp_path: Path
) -> None:
    server, trust, service_creds, enrol_creds = secured
    fleet = await harness.Fleet(server.url, tmp_path, creds=service_creds).open()
    announces: list[Announce] = []

    async def stand_in_registry(msg: Msg) -> None:
        request = decode_as(msg.data, Announce)
        announces.append(request)
        if len(announces) == 1:
            reply = AnnounceReply(device_id=request.device_id, status="pending", retry_after_s=0.2)
        else:
            expires = int(time.time()) + 3600
            jwt = trust.device_jwt(request.public_key, request.device_id,
                                 device_permissions(request.device_id), expires_at=expires)
            reply = AnnounceReply(device_id=request.device_id, status="accepted", credentials=DeviceCredentials(
                jwt, datetime.fromtimestamp(expires, UTC), device_inbox_prefix(request.device_id), trust.devices_account_key))
        await msg.respond(encode(ReplyOk(msgspec.Raw(encode(reply)))))

    try:
        await fleet.nc.subscribe("sdv.announce.*", cb=stand_in_registry)
        pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
        await fleet.desire("car-sec", 1, {"ticker": pkg})
        agent = fleet.agent("car-sec", SDV_AGENT_ENROL="1", SDV_AGENT_ENROL_CREDS=str(enrol_creds),
                            SDV_AGENT_HARDWARE_TYPE="jetson-orin")

        # Desired watch, object store download, facts, reported state and console all work with
        # nothing but the device's own rights.
        await fleet.until_state("car-sec", "ticker", "RUNNING", healthy=True, timeout=20)
        await fleet.fact("car-sec", "AppHealthy", app="ticker")
        await fleet.until(lambda: len(fleet.lines("car-sec", "ticker")) > 3, what="console lines")
        reply = await fleet.op("car-sec", "pause", {"app": "ticker"})  # ops: subscribe + respond
        assert reply["result"]["state"] == "PAUSED"

        assert len(announces) == 2  # pending first, then accepted
        caps = announces[-1].capabilities
        assert caps.hardware_type == "jetson-orin"
        assert caps.runtimes == ["native"]
        assert caps.memory_mb > 0
        creds = agent.data_dir / "device.creds"
        assert oct(creds.stat().st_mode & 0o777) == "0o600"
        assert oct((agent.data_dir / "device.nk").stat().st_mode & 0o777) == "0o600"
        assert "permissions violation" not in agent.log().lower(), agent.log()
    finally:
        await fleet.close()


async def test_the_agent_renews_over_its_own_connection_and_announces_only_to_enrol(
    secured: tuple[NatsServer, Trust, Path, Path], harness: Any, tmp_path: Path
) -> None:
    """The shared enrolment user serves the first enrolment only. Renewals come on
    `sdv.renew.<id>`, which only the device's own JWT may publish on; the agent keeps working when
    the server ends its session at the first JWT's expiry (it reconnects with the renewed one),
    and a restart connects with the stored credentials and renews instead of announcing."""
    server, trust, service_creds, enrol_creds = secured
    fleet = await harness.Fleet(server.url, tmp_path, creds=service_creds).open()
    seen: list[str] = []
    ttl_s = [6]  # short at first: the connection's own JWT expires during the test

    async def stand_in_registry(msg: Msg) -> None:
        request = decode_as(msg.data, Announce)
        seen.append(msg.subject.split(".")[1])
        expires = int(time.time()) + ttl_s[0]
        jwt = trust.device_jwt(request.public_key, request.device_id,
                               device_permissions(request.device_id), expires_at=expires)
        reply = AnnounceReply(device_id=request.device_id, status="accepted", credentials=DeviceCredentials(
            jwt, datetime.fromtimestamp(expires, UTC), device_inbox_prefix(request.device_id),
            trust.devices_account_key))
        await msg.respond(encode(ReplyOk(msgspec.Raw(encode(reply)))))

    try:
        assert fleet.nc is not None
        await fleet.nc.subscribe("sdv.announce.*", cb=stand_in_registry)
        await fleet.nc.subscribe("sdv.renew.*", cb=stand_in_registry)
        pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
        await fleet.desire("car-renew", 1, {"ticker": pkg})
        agent = fleet.agent("car-renew", SDV_AGENT_ENROL="1", SDV_AGENT_ENROL_CREDS=str(enrol_creds))
        await fleet.until_state("car-renew", "ticker", "RUNNING", healthy=True, timeout=20)

        started = time.monotonic()
        await fleet.until(lambda: time.monotonic() - started > ttl_s[0] + 2 and seen.count("renew") >= 3,
                          timeout=30, what="renewals past the first JWT's expiry")
        assert seen.count("announce") == 1
        reply = await fleet.op("car-renew", "pause", {"app": "ticker"})  # still on the bus
        assert reply["result"]["state"] == "PAUSED"
        assert "nats_connection_closed" in agent.log()  # the server ended the first JWT's session

        ttl_s[0] = 3600
        renewals = seen.count("renew")
        await fleet.until(lambda: seen.count("renew") > renewals, timeout=10, what="a long-lived JWT")
        agent.stop()
        renewals = seen.count("renew")
        fleet.agent("car-renew", SDV_AGENT_ENROL="1", SDV_AGENT_ENROL_CREDS=str(enrol_creds))
        await fleet.until(lambda: seen.count("renew") > renewals, timeout=20, what="a renewal after restart")
        assert seen.count("announce") == 1  # the restart connected with its stored credentials
        reply = await fleet.op("car-renew", "resume", {"app": "ticker"})
        assert reply["result"]["state"] == "RUNNING"
        assert "credentials_refused" not in agent.log()
        assert "permissions violation" not in agent.log().lower(), agent.log()
    finally:
        await fleet.close()
