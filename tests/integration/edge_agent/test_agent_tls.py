"""The agent over TLS: a real agent process that pins the fleet's CA (`--nats-ca`) enrols over a
TLS-only, operator-mode NATS and runs what it is told; agents that pin nothing or another CA never
get as far as announcing, and their logs say why; an agent given a CA file that is not there
refuses to start."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nacl.signing
import pytest
from nats.aio.msg import Msg

from sdv_events.auth import Trust, device_inbox_prefix, device_permissions, render_server_config
from sdv_events.auth.certificates import ServerTls, ensure_server_tls
from sdv_events.bus.rpc import ReplyOk
from sdv_events.codec import decode_as, encode
from sdv_events.schemas.devices import Announce, AnnounceReply, DeviceCredentials
from sdv_events.servers import NatsServer


@dataclass
class TlsFleetServer:
    server: NatsServer
    trust: Trust
    tls: ServerTls
    service_creds: Path
    enrol_creds: Path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsFleetServer]:
    trust = Trust.generate()
    tls = ensure_server_tls(tmp_path / "tls")
    server = NatsServer(config_text=render_server_config(trust), tls=tls).start()
    service, enrol = tmp_path / "service.creds", tmp_path / "enrol.creds"
    service.write_text(trust.service_creds())
    enrol.write_text(trust.enrol_creds())
    try:
        yield TlsFleetServer(server, trust, tls, service, enrol)
    finally:
        server.stop()


def _accept_at_once(trust: Trust, announced: list[str]) -> Any:
    """A stand-in registry: every announce is accepted with device credentials."""
    async def registry(msg: Msg) -> None:
        request = decode_as(msg.data, Announce)
        announced.append(request.device_id)
        expires = int(time.time()) + 3600
        jwt = trust.user_jwt(request.public_key, request.device_id, device_permissions(request.device_id),
                             expires_at=expires)
        reply = AnnounceReply(device_id=request.device_id, status="accepted", credentials=DeviceCredentials(
            jwt, datetime.fromtimestamp(expires, UTC), device_inbox_prefix(request.device_id), trust.account_key))
        await msg.respond(encode(ReplyOk(msgspec.Raw(encode(reply)))))
    return registry


async def test_an_agent_pins_the_fleet_ca(tls_server: TlsFleetServer, harness: Any, tmp_path: Path) -> None:
    assert tls_server.server.url.startswith("tls://")
    fleet = await harness.Fleet(tls_server.server.url, tmp_path, creds=tls_server.service_creds,
                                ca=tls_server.tls.ca_file).open()
    announced: list[str] = []
    foreign = ensure_server_tls(tmp_path / "foreign-ca")
    try:
        await fleet.nc.subscribe("sdv.announce.*", cb=_accept_at_once(tls_server.trust, announced))
        pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
        for device in ("car-tls", "car-no-ca", "car-foreign-ca"):
            await fleet.desire(device, 1, {"ticker": pkg})
        enrol = {"SDV_AGENT_ENROL": "1", "SDV_AGENT_ENROL_CREDS": str(tls_server.enrol_creds)}
        pinned = fleet.agent("car-tls", ["--nats-ca", str(tls_server.tls.ca_file)], **enrol)
        unpinned = fleet.agent("car-no-ca", SDV_NATS_CA="", **enrol)
        mispinned = fleet.agent("car-foreign-ca", ["--nats-ca", str(foreign.ca_file)], **enrol)

        # Enrolment, desired watch, object store download, facts and reported state over TLS.
        await fleet.until_state("car-tls", "ticker", "RUNNING", healthy=True, timeout=30)
        await fleet.fact("car-tls", "AppHealthy", app="ticker")
        assert "certificate verify failed" not in pinned.log()

        for agent in (unpinned, mispinned):
            await fleet.until(lambda a=agent: "certificate verify failed" in a.log(), timeout=15,
                              what=f"{agent.device_id} refusing the server's certificate")
        assert "set SDV_NATS_CA to the suite's ca.pem" in unpinned.log()
        assert f"not signed by the CA in {foreign.ca_file}" in mispinned.log()
        assert set(announced) == {"car-tls"}  # the others never said a word to the server
        assert await fleet.reported("car-no-ca") is None
    finally:
        await fleet.close()


def test_an_agent_given_a_ca_file_that_is_not_there_refuses_to_start(tmp_path: Path) -> None:
    orchestrator_key = base64.b64encode(bytes(nacl.signing.SigningKey.generate().verify_key)).decode()
    result = subprocess.run(
        [sys.executable, "-m", "sdv_edge_agent", "--device-id", "car-x", "--packager-key", "AAAA",
         "--orchestrator-key", orchestrator_key,
         "--data-dir", str(tmp_path / "agent"), "--nats-url", "tls://127.0.0.1:4222",
         "--nats-ca", str(tmp_path / "missing-ca.pem")],
        capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 2
    assert f"no CA certificate at {tmp_path / 'missing-ca.pem'} (SDV_NATS_CA)" in result.stderr
