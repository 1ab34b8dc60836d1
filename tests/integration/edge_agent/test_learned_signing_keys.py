"""Trust without handling keys (issue 13, point 3): an agent given nothing but the enrolment
credentials (and the CA, on a TLS server) learns the packager's and orchestrator's public keys
from the user JWT the registry issues it — signed by the devices signing key its enrolment
credentials name — and then installs signed packages and acts on signed desired documents,
while a package signed by any other key is refused.

An operator-mode NATS server and a stand-in registry that issues real device JWTs the way the
registry's `CredentialIssuer` does (`DeviceAuthority.device_jwt(signing_keys=…)`); the agent is a
real `python -m sdv_edge_agent` process started WITHOUT --packager-key / --orchestrator-key.
(The real registry hands the keys out in the `sdv up` tests: its local agents get none either.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg

from sdv_events.auth import Trust, device_inbox_prefix, device_permissions, render_server_config
from sdv_events.auth.suite_keys import SuiteKeys
from sdv_events.bus.rpc import ReplyOk
from sdv_events.codec import decode_as, encode
from sdv_events.schemas.devices import Announce, AnnounceReply, DeviceCredentials
from sdv_events.servers import NatsServer
from sdv_packager.signing import Signer

pytestmark = pytest.mark.timeout(90)


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


def stand_in_registry(trust: Trust, keys: Callable[[], SuiteKeys], seen: list[str]):  # type: ignore[no-untyped-def]
    """Accepts every announce and renewal with a device JWT carrying `keys()`, as the registry
    configured with SDV_REGISTRY_PACKAGER_KEYS / _ORCHESTRATOR_KEYS does."""
    async def answer(msg: Msg) -> None:
        request = decode_as(msg.data, Announce)
        seen.append(msg.subject.split(".")[1])
        expires = int(time.time()) + 3600
        jwt = trust.authority().device_jwt(request.public_key, request.device_id,
                                           device_permissions(request.device_id), expires_at=expires,
                                           signing_keys=keys())
        reply = AnnounceReply(device_id=request.device_id, status="accepted", credentials=DeviceCredentials(
            jwt, datetime.fromtimestamp(expires, UTC), device_inbox_prefix(request.device_id),
            trust.devices_account_key))
        await msg.respond(encode(ReplyOk(msgspec.Raw(encode(reply)))))

    return answer


async def test_an_agent_enrolled_with_only_enrolment_credentials_installs_a_signed_package(
    secured: tuple[NatsServer, Trust, Path, Path], harness: Any, tmp_path: Path
) -> None:
    server, trust, service_creds, enrol_creds = secured
    fleet = await harness.Fleet(server.url, tmp_path, creds=service_creds).open()
    seen: list[str] = []
    keys = SuiteKeys((fleet.signer.public_key_b64,), (fleet.orchestrator.public_key_b64,))
    try:
        await fleet.nc.subscribe("sdv.announce.*", cb=stand_in_registry(trust, lambda: keys, seen))
        pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
        await fleet.desire("car-learn", 1, {"ticker": pkg})
        agent = fleet.agent("car-learn", given_keys=False, SDV_AGENT_ENROL="1",
                            SDV_AGENT_ENROL_CREDS=str(enrol_creds))
        assert "--packager-key" not in agent.process.args
        assert "--orchestrator-key" not in agent.process.args

        await fleet.until_state("car-learn", "ticker", "RUNNING", healthy=True, version="1.0.0", timeout=30)
        await fleet.until(lambda: len(fleet.lines("car-learn", "ticker")) > 1, what="console lines")
        assert "signing_keys_trusted" in agent.log()
        assert seen == ["announce"]

        # A restart learns the keys again from the stored credentials, before it restarts the
        # installed app (whose kept signature it checks with them).
        agent.stop()
        harness.kill_processes_under(agent.data_dir / "apps")
        fleet.agent("car-learn", given_keys=False, SDV_AGENT_ENROL="1", SDV_AGENT_ENROL_CREDS=str(enrol_creds))
        await fleet.until_state("car-learn", "ticker", "RUNNING", healthy=True, version="1.0.0", timeout=30)
        assert seen.count("announce") == 1  # it connected with its stored credentials
    finally:
        await fleet.close()


async def test_a_package_signed_by_an_unknown_key_is_refused(
    secured: tuple[NatsServer, Trust, Path, Path], harness: Any, tmp_path: Path
) -> None:
    """Whoever can write the object store and a (validly signed) desired document still cannot
    get code onto the device: the package must be signed by a key the suite's credentials name."""
    server, trust, service_creds, enrol_creds = secured
    fleet = await harness.Fleet(server.url, tmp_path, creds=service_creds).open()
    keys = SuiteKeys((fleet.signer.public_key_b64,), (fleet.orchestrator.public_key_b64,))
    try:
        await fleet.nc.subscribe("sdv.announce.*", cb=stand_in_registry(trust, lambda: keys, []))
        fleet.signer = Signer(Ed25519PrivateKey.generate())  # the attacker's packager key
        forged = await fleet.publish(harness.make_app(tmp_path, "ticker", "6.6.6", harness.ticker_source("evil")))
        await fleet.desire("car-forged", 1, {"ticker": forged})
        agent = fleet.agent("car-forged", given_keys=False, SDV_AGENT_ENROL="1",
                            SDV_AGENT_ENROL_CREDS=str(enrol_creds))

        failed = await fleet.fact("car-forged", "AppFailed", timeout=30, app="ticker", stage="verify")
        assert "signature does not verify with the packager key(s) this agent trusts" in failed.data.reason
        assert await fleet.app_state("car-forged", "ticker") != "RUNNING"
        assert harness.processes_under(agent.data_dir) == []
        assert not (agent.data_dir / "apps" / "ticker").exists() or not any(
            (agent.data_dir / "apps" / "ticker").glob("6.6.6-*/.installed"))
        assert fleet.lines("car-forged", "ticker") == []
    finally:
        await fleet.close()


async def test_a_rotated_key_reaches_the_agent_with_its_next_credentials(
    secured: tuple[NatsServer, Trust, Path, Path], harness: Any, tmp_path: Path
) -> None:
    """Rotation: the registry lists old and new packager keys; the agent takes the list with its
    next credentials (here: the renewal soon after a restart) and then installs a package signed
    by the new key, while what the old key signed still runs."""
    server, trust, service_creds, enrol_creds = secured
    fleet = await harness.Fleet(server.url, tmp_path, creds=service_creds).open()
    old_signer, new_signer = fleet.signer, Signer(Ed25519PrivateKey.generate())
    listed = [SuiteKeys((old_signer.public_key_b64,), (fleet.orchestrator.public_key_b64,))]
    seen: list[str] = []
    try:
        registry = stand_in_registry(trust, lambda: listed[0], seen)
        await fleet.nc.subscribe("sdv.announce.*", cb=registry)
        await fleet.nc.subscribe("sdv.renew.*", cb=registry)
        v1 = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
        await fleet.desire("car-rotate", 1, {"ticker": v1})
        env = {"SDV_AGENT_ENROL": "1", "SDV_AGENT_ENROL_CREDS": str(enrol_creds)}
        agent = fleet.agent("car-rotate", given_keys=False, **env)
        await fleet.until_state("car-rotate", "ticker", "RUNNING", healthy=True, version="1.0.0", timeout=30)

        # The rotation starts: both keys valid. The agent restarts (or renews) and learns both.
        listed[0] = SuiteKeys((old_signer.public_key_b64, new_signer.public_key_b64),
                              (fleet.orchestrator.public_key_b64,))
        agent.stop()
        agent = fleet.agent("car-rotate", given_keys=False, **env)
        await fleet.until(lambda: "renew" in seen, timeout=20, what="the renewal after the restart")
        await fleet.until(lambda: new_signer.key_id in agent.log(), timeout=10,
                          what="the new key list trusted")
        fleet.signer = new_signer
        v2 = await fleet.publish(harness.make_app(tmp_path, "ticker", "2.0.0", harness.ticker_source("v2")))
        await fleet.desire("car-rotate", 2, {"ticker": v2})
        await fleet.until_state("car-rotate", "ticker", "RUNNING", healthy=True, version="2.0.0", timeout=30)
    finally:
        await fleet.close()
