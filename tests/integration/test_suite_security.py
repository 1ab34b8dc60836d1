"""The suite as `sdv up` runs it by default: embedded NATS in operator mode over TLS (clients pin
its CA: test_suite_tls.py), so the server itself enforces who may do what. Services answer ping over it with the service credentials `sdv up`
wrote; a client without credentials is refused; the enrolment credentials can announce and
nothing else; a device the registry accepted connects with the credentials it was issued, can
publish its heartbeat (and no more) and renews over its own connection; the registry holds
only the keys it signs with."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient

from sdv_client.health import SERVICES, ping_all
from sdv_client.suite import REGISTRY_TRUST_FILE, Suite
from sdv_events import enrolment
from sdv_events.auth import (
    ENROL_INBOX_PREFIX,
    DeviceAuthority,
    Role,
    Trust,
    announce_subject,
    new_keypair,
    public_key,
    raw_creds,
    seed_of,
)
from sdv_events.auth.client_tls import tls_options
from sdv_events.auth.creds import format_creds
from sdv_events.bus import CommandClient
from sdv_events.codec import decode_as, encode
from sdv_events.schemas.devices import (
    AcceptDevice,
    Announce,
    AnnounceReply,
    Capabilities,
    DeviceView,
    GetDevice,
)
from sdv_events.service import Ping, ServiceHealth

pytestmark = pytest.mark.timeout(60)
SDV = Path(sys.executable).parent / "sdv"


class Errors(list[str]):
    """What nats-py reports asynchronously (the server's refusals), lower-cased; pass
    `error_cb=errors.record`."""

    async def record(self, exc: Exception) -> None:
        self.append(str(exc).lower())


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def refused(errors: Errors, action: Callable[[], Awaitable[None]], subject: str) -> None:
    before = len(errors)
    await action()
    for _ in range(40):
        if any("permissions violation" in e and subject.lower() in e for e in errors[before:]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server did not refuse {subject!r}: {errors[before:]}")


@pytest.fixture(scope="module")
async def suite(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> AsyncIterator[Suite]:
    # nats_url=None: the embedded, operator-mode NATS of `sdv up` even when SDV_NATS_URL is set.
    data_dir = tmp_path_factory.mktemp("sdv-up")
    async with Suite(data_dir=data_dir, nats_url=None, database_url=database_url) as running:
        await running.wait_ready(timeout=40)
        yield running


@pytest.fixture(scope="module")
async def ops(suite: Suite) -> AsyncIterator[CommandClient]:
    """The admin of `sdv up` (an operator: commands, no subscriptions but its inbox and logs)."""
    nc = await nats.connect(str(suite.nats_url), user_credentials=suite.nats_creds, **_tls(suite))
    yield CommandClient(nc, actor="operator:test", timeout=5.0)
    await nc.close()


@pytest.fixture(scope="module")
async def watcher(suite: Suite) -> AsyncIterator[NatsClient]:
    """A user of the app account with every right there, to watch what reaches it."""
    trust = Trust.load(suite.dir / "nats" / "trust.json")
    nc = await nats.connect(str(suite.nats_url), user_credentials=raw_creds(trust.service_creds("watcher")),
                            **_tls(suite))
    yield nc
    await nc.close()


def _tls(suite: Suite) -> dict[str, Any]:
    """The suite's NATS requires TLS: pin the CA `sdv up` made."""
    return tls_options(str(suite.nats_url), suite.nats_ca)


def _sdv_ping(suite: Suite, *args: str, creds: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SDV_NATS_CREDS", "SDV_NATS_CA")}
    env["SDV_NATS_URL"] = str(suite.nats_url)
    if creds:
        env["SDV_NATS_CREDS"] = creds
    if "--data-dir" not in args:
        env["SDV_NATS_CA"] = str(suite.nats_ca)
    return subprocess.run([str(SDV), "ping", "--json", "--timeout", "3", *args], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


async def test_sdv_up_keeps_keys_and_credentials_owner_only(suite: Suite) -> None:
    nats_dir = suite.dir / "nats"
    assert stat.S_IMODE(nats_dir.stat().st_mode) == 0o700
    for name in ("trust.json", REGISTRY_TRUST_FILE, "operator.creds", "enrol.creds",
                 *(f"services/{service}.creds" for service in SERVICES)):
        assert stat.S_IMODE((nats_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((nats_dir / "services").stat().st_mode) == 0o700
    assert suite.nats_creds == str(nats_dir / "operator.creds")
    assert suite.enrol_creds == nats_dir / "enrol.creds"
    assert "-----BEGIN NATS USER JWT-----" in (nats_dir / "enrol.creds").read_text()
    # Each service connects as its own user; none gets the operator's credentials.
    assert {n: suite._service_env(n)["SDV_NATS_CREDS"] for n in SERVICES} == {
        n: str(nats_dir / "services" / f"{n}.creds") for n in SERVICES}


async def test_the_registry_gets_no_identity_seeds(suite: Suite) -> None:
    """The registry signs device JWTs and the devices account's revocations; its file holds those
    signing keys and the system user, never the operator's or the app account's identity, the
    app account's signing key, nor any service or enrolment user's seed."""
    nats_dir = suite.dir / "nats"
    given = Path(suite._service_env("registry")["SDV_TRUST_FILE"])
    assert given == nats_dir / REGISTRY_TRUST_FILE
    assert all("SDV_TRUST_FILE" not in suite._service_env(n) for n in SERVICES if n != "registry")
    trust = Trust.load(nats_dir / "trust.json")
    text = await asyncio.to_thread(given.read_text)
    for name in ("operator", "account", "account_signing", "system_account", "service_user",
                 "enrol_user", "devices_account"):
        assert bytes(getattr(trust, name).seed).decode() not in text, f"the {name} seed"
    authority = DeviceAuthority.load(given)
    assert authority.devices_account == trust.devices_account_key
    assert authority.app_account == trust.account_key  # its public key only, for the imports


async def test_services_answer_ping_over_the_operator_mode_server(suite: Suite, ops: CommandClient) -> None:
    answers = await ping_all(ops.nc, SERVICES, timeout=3)
    assert all(isinstance(a, ServiceHealth) for a in answers.values()), answers

    # `sdv ping` with the credentials of `sdv up` (by data dir, or by SDV_NATS_CREDS) …
    for result in await asyncio.gather(
        asyncio.to_thread(_sdv_ping, suite, "--data-dir", str(suite.dir)),
        asyncio.to_thread(_sdv_ping, suite, creds=suite.nats_creds),
    ):
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is True
        assert report["nats_creds"] == suite.nats_creds
    # … and without: the server refuses the connection.
    bare = await asyncio.to_thread(_sdv_ping, suite)
    assert bare.returncode == 1
    assert "authorization violation" in json.loads(bare.stdout)["error"].lower()


async def test_a_client_without_credentials_is_refused(suite: Suite) -> None:
    errors = Errors()
    with pytest.raises(Exception) as caught:  # noqa: PT011 - nats-py raises several kinds here
        await nats.connect(str(suite.nats_url), allow_reconnect=False, connect_timeout=2,
                           max_reconnect_attempts=1, error_cb=errors.record, **_tls(suite))
    assert "authorization violation" in " ".join([str(caught.value).lower(), *errors])


def _announce(device_id: str, key: Any) -> bytes:
    caps = Capabilities(hardware_type="linux-generic", arch="x86_64", runtimes=["native"],
                        python_version="3.11.9", agent_version="0.1.0", memory_mb=2048, storage_mb=8192)
    return encode(Announce(device_id=device_id, public_key=public_key(key), capabilities=caps))


async def _request_announce(nc: NatsClient, device_id: str, key: Any) -> AnnounceReply:
    """The agent's exchange: a nonce, then the announce signed with the device's own key."""
    caps = decode_as(_announce(device_id, key), Announce).capabilities
    return await enrolment.announce(nc, key, device_id, caps, timeout=5)


async def _enrolment_client(suite: Suite, errors: Errors) -> NatsClient:
    assert suite.enrol_creds is not None
    return await nats.connect(str(suite.nats_url), user_credentials=str(suite.enrol_creds),
                              inbox_prefix=ENROL_INBOX_PREFIX, error_cb=errors.record, allow_reconnect=False,
                              **_tls(suite))


async def test_enrolment_credentials_announce_but_read_no_events(suite: Suite, watcher: NatsClient) -> None:
    device_id = f"sec-enrol-{uuid.uuid4().hex[:8]}"
    seen = await watcher.subscribe(announce_subject(device_id))
    await watcher.flush()
    errors = Errors()
    nc = await _enrolment_client(suite, errors)
    try:
        reply = await _request_announce(nc, device_id, new_keypair(Role.USER))
        assert (reply.status, reply.credentials) == ("pending", None)
        assert (await seen.next_msg(timeout=2)).subject == announce_subject(device_id)
        assert errors == []

        async def sub(subject: str) -> None:
            await nc.subscribe(subject)
            await nc.flush()

        async def pub(subject: str) -> None:
            await nc.publish(subject, b"x")
            await nc.flush()

        await refused(errors, lambda: sub("sdv.evt.>"), "sdv.evt.>")
        await refused(errors, lambda: sub("_INBOX.>"), "_INBOX.>")
        await refused(errors, lambda: pub(f"sdv.hb.{device_id}"), f"sdv.hb.{device_id}")
        await refused(errors, lambda: pub("sdv.cmd.registry.accept"), "sdv.cmd.registry.accept")
    finally:
        await nc.close()
        await seen.unsubscribe()


async def test_an_accepted_device_connects_with_its_credentials_and_heartbeats(
    suite: Suite, ops: CommandClient, watcher: NatsClient,
) -> None:
    device_id = f"sec-dev-{uuid.uuid4().hex[:8]}"
    key = new_keypair(Role.USER)
    enrol_errors = Errors()
    enrol = await _enrolment_client(suite, enrol_errors)
    try:
        assert (await _request_announce(enrol, device_id, key)).status == "pending"
        accepted = await ops.call("registry", "accept", AcceptDevice(device_id, "security test"), DeviceView)
        assert accepted.status == "accepted"
        reply = await _request_announce(enrol, device_id, key)
    finally:
        await enrol.close()
    assert reply.status == "accepted", reply
    assert reply.credentials is not None

    heartbeats = await watcher.subscribe(f"sdv.hb.{device_id}")
    await watcher.flush()
    errors = Errors()
    device = await nats.connect(
        str(suite.nats_url), user_credentials=raw_creds(format_creds(reply.credentials.jwt, seed_of(key))),
        inbox_prefix=reply.credentials.inbox_prefix, error_cb=errors.record, allow_reconnect=False,
        **_tls(suite),
    )
    try:
        await device.publish(f"sdv.hb.{device_id}", b"")
        await device.flush()
        assert (await heartbeats.next_msg(timeout=2)).subject == f"sdv.hb.{device_id}"

        async def online() -> bool:
            view = await ops.call("registry", "get", GetDevice(device_id), DeviceView)
            return view.online

        assert await eventually(online), "the registry never saw the heartbeat"
        assert errors == []

        # Its own subjects only: another device's heartbeat and the event stream are refused.
        async def pub(subject: str) -> None:
            await device.publish(subject, b"x")
            await device.flush()

        async def sub(subject: str) -> None:
            await device.subscribe(subject)
            await device.flush()

        await refused(errors, lambda: pub("sdv.hb.someone-else"), "sdv.hb.someone-else")
        await refused(errors, lambda: sub("sdv.evt.>"), "sdv.evt.>")

        # It renews over its own connection, with the registry's own trust file.
        caps = decode_as(_announce(device_id, key), Announce).capabilities
        renewed = await enrolment.renew(device, key, device_id, caps, timeout=5)
        assert renewed.status == "accepted"
        assert renewed.credentials is not None
        assert renewed.credentials.account == reply.credentials.account
    finally:
        await device.close()
        await heartbeats.unsubscribe()


def test_a_second_sdv_up_on_the_same_data_dir_reuses_the_chain_of_trust(tmp_path: Path) -> None:
    """Device credentials stay valid across restarts only if the keys do: the trust is made once.
    So is the TLS CA agents pin, and the server certificate it signed."""
    env = {k: v for k, v in os.environ.items() if k not in ("SDV_NATS_URL", "SDV_NATS_CREDS", "SDV_NATS_CA")}
    trust_file = tmp_path / "nats" / "trust.json"
    seen, certs = [], []
    for _ in range(2):
        result = subprocess.run([str(SDV), "up", "--check", "--json", "--agents", "0", "--data-dir", str(tmp_path)],
                                env=env, capture_output=True, text=True, timeout=25, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["nats_creds"] == str(tmp_path / "nats" / "operator.creds")
        seen.append(trust_file.read_text())
        certs.append([(tmp_path / "nats" / "tls" / name).read_bytes() for name in ("ca.pem", "server.pem")])
    assert seen[0] == seen[1]
    assert certs[0] == certs[1]


async def _client_of(suite: Suite, creds: str, errors: Errors) -> NatsClient:
    return await nats.connect(str(suite.nats_url), user_credentials=creds, error_cb=errors.record,
                              allow_reconnect=False, **_tls(suite))


async def test_each_service_publishes_only_its_own_events_and_no_one_deletes_the_record(suite: Suite) -> None:
    """A compromised service (here: the monitor's and the orchestrator's own credentials) can
    neither forge another service's events, nor hear another service's commands, nor delete or
    purge the streams that carry the record."""
    async def pub(nc: NatsClient, subject: str) -> None:
        await nc.publish(subject, b"{}")
        await nc.flush()

    async def sub(nc: NatsClient, subject: str) -> None:
        await nc.subscribe(subject)
        await nc.flush()

    for service, foreign_event, foreign_commands in (
            ("monitor", "sdv.evt.rollout.r-1.RolloutCreated", "sdv.cmd.orchestrator.>"),
            ("orchestrator", "sdv.evt.device.car-1.DeviceAccepted", "sdv.cmd.registry.>"),
            ("registry", "sdv.evt.package.nav.PackagePublished", "sdv.cmd.packager.>")):
        errors = Errors()
        nc = await _client_of(suite, suite.service_creds[service], errors)
        try:
            await refused(errors, lambda nc=nc, s=foreign_event: pub(nc, s), foreign_event)
            await refused(errors, lambda nc=nc, s=foreign_commands: sub(nc, s), foreign_commands)
            for api in ("$JS.API.STREAM.DELETE.SDV_EVENTS", "$JS.API.STREAM.PURGE.SDV_EVENTS",
                        "$JS.API.STREAM.MSG.DELETE.SDV_EVENTS", "$JS.API.STREAM.DELETE.KV_sdv_desired"):
                await refused(errors, lambda nc=nc, s=api: pub(nc, s), api)
        finally:
            await nc.close()


async def test_the_operators_credentials_call_commands_but_publish_no_event(suite: Suite) -> None:
    errors = Errors()
    nc = await _client_of(suite, str(suite.nats_creds), errors)
    try:
        health = await CommandClient(nc, actor="operator:test", timeout=5).call(
            "orchestrator", "ping", Ping(), ServiceHealth)
        assert health.service == "orchestrator"
        for subject in ("sdv.evt.rollout.r-1.RolloutCreated", "sdv.evt.agent.car-1.AppHealthy",
                        "$JS.API.STREAM.DELETE.SDV_EVENTS", "$KV.sdv_desired.car-1"):
            await refused(errors, lambda s=subject: nc.publish(s, b"{}"), subject)
    finally:
        await nc.close()


async def test_the_monitor_tails_a_devices_console_but_cannot_write_one(suite: Suite, ops: CommandClient) -> None:
    """The dashboard's console tail runs on the monitor's own credentials: an ordered JetStream
    consumer of SDV_LOGS reads what a device printed; writing a console line is the device's alone."""
    from sdv_monitor.adapters.console_tail import ConsoleTail

    device_id = f"sec-log-{uuid.uuid4().hex[:8]}"
    key = new_keypair(Role.USER)
    enrol = await _enrolment_client(suite, Errors())
    try:
        assert (await _request_announce(enrol, device_id, key)).status == "pending"
        await ops.call("registry", "accept", AcceptDevice(device_id, "console test"), DeviceView)
        reply = await _request_announce(enrol, device_id, key)
    finally:
        await enrol.close()
    assert reply.credentials is not None
    device = await nats.connect(
        str(suite.nats_url), user_credentials=raw_creds(format_creds(reply.credentials.jwt, seed_of(key))),
        inbox_prefix=reply.credentials.inbox_prefix, allow_reconnect=False, **_tls(suite))
    errors = Errors()
    monitor = await _client_of(suite, suite.service_creds["monitor"], errors)
    try:
        await device.publish(f"sdv.logs.{device_id}.nav-app.stdout", b"route ready", headers={"Sdv-Ts": "1.5"})
        await device.flush()
        lines = ConsoleTail(monitor.jetstream()).follow(device_id, "nav-app")
        first = await asyncio.wait_for(anext(lines), 10)
        await lines.aclose()
        assert (first.stream, first.line, first.ts) == ("stdout", "route ready", 1.5)
        forged = f"sdv.logs.{device_id}.nav-app.stderr"

        async def pub() -> None:
            await monitor.publish(forged, b"forged")
            await monitor.flush()

        await refused(errors, pub, forged)
    finally:
        await monitor.close()
        await device.close()
