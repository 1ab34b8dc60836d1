"""One device against another (issue 11, "devices cannot interfere with each other"), on an
operator-mode NATS server with real device credentials (the suite's devices account and device
permissions): the attacker is a plain nats-py client holding car-A's credentials, the victim a
real agent (car-B)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from sdv_edge_agent.domain.facts import IdSealer, fact_msg_id
from sdv_events.auth import (
    Role,
    Trust,
    device_inbox_prefix,
    device_permissions,
    new_keypair,
    public_key,
    raw_creds,
    render_server_config,
    seed_of,
)
from sdv_events.auth.creds import format_creds
from sdv_events.provisioning import DESIRED_BUCKET, EVENTS_STREAM, PACKAGES_BUCKET, UPLOADS_BUCKET
from sdv_events.servers import NatsServer


@dataclass
class Secured:
    server: NatsServer
    trust: Trust
    fleet: Any
    root: Path
    errors: list[str] = field(default_factory=list)

    def device_creds(self, device_id: str) -> str:
        key = new_keypair(Role.USER)
        jwt = self.trust.device_jwt(public_key(key), device_id, device_permissions(device_id))
        return format_creds(jwt, seed_of(key))

    async def attacker(self, device_id: str = "car-A") -> NatsClient:
        async def record(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        return await nats.connect(self.server.url, user_credentials=raw_creds(self.device_creds(device_id)),
                                  inbox_prefix=device_inbox_prefix(device_id), error_cb=record,
                                  allow_reconnect=False)

    def victim(self, device_id: str = "car-B") -> Any:
        creds = self.root / f"{device_id}.creds"
        creds.write_text(self.device_creds(device_id))
        creds.chmod(0o600)
        return self.fleet.agent(device_id, ["--nats-creds", str(creds)])

    async def refused(self, nc: NatsClient, subject: str, body: bytes = b"") -> None:
        """The server answers nothing but a permissions violation."""
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request(subject, body, timeout=1.0)
        await nc.flush()
        for _ in range(40):
            if any("permissions violation" in e and subject.lower() in e for e in self.errors):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permissions violation for {subject}: {self.errors}")


@pytest.fixture
async def secured(tmp_path: Path, harness: Any) -> AsyncIterator[Secured]:
    trust = Trust.generate()
    server = NatsServer(config_text=render_server_config(trust)).start()
    service = tmp_path / "service.creds"
    service.write_text(trust.service_creds())
    fleet = await harness.Fleet(server.url, tmp_path, creds=service).open()
    try:
        yield Secured(server, trust, fleet, tmp_path)
    finally:
        await fleet.close()
        server.stop()


async def stored(js: Any, stream: str, subjects: str) -> list[Msg]:
    """Every message the stream holds on `subjects` (wildcards allowed): what JetStream kept, not
    what core subscribers saw (they see duplicates JetStream dropped)."""
    info = await js.stream_info(stream, subjects_filter=subjects)
    expected = sum((info.state.subjects or {}).values())
    got: list[Msg] = []
    if expected == 0:
        return got
    sub = await js.subscribe(subjects, stream=stream, ordered_consumer=True)
    try:
        while len(got) < expected:
            got.append(await sub.next_msg(2.0))
    finally:
        await sub.unsubscribe()
    return got


async def test_a_device_cannot_pre_empt_another_devices_fact(secured: Secured, harness: Any,
                                                             tmp_path: Path) -> None:
    fleet = secured.fleet
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    attacker = await secured.attacker("car-A")
    # Decoys on the attacker's own permitted subjects, carrying every id it can compute for the
    # victim's coming facts: the clear identity, a guess at the sealed form, and log row ids.
    guess = IdSealer("car-B", b"\0" * 32)
    js = attacker.jetstream(timeout=2.0)
    for kind in ("AppDownloadStarted", "AppInstalled", "AppStarted", "AppHealthy"):
        for msg_id in (fact_msg_id("car-B", "ticker", pkg.digest, 1, f"agent.{kind}.v1"),
                       guess.fact_id("ticker", pkg.digest, 1, f"agent.{kind}.v1")):
            await js.publish(f"sdv.evt.agent.car-A.{kind}", b"{}", headers={"Nats-Msg-Id": msg_id})
    for row in range(1, 30):
        for msg_id in (f"car-B.{row}", guess.log_id(row)):
            await js.publish("sdv.logs.car-A.ticker.stdout", b"decoy", headers={"Nats-Msg-Id": msg_id})
    await attacker.close()

    await fleet.desire("car-B", 1, {"ticker": pkg})
    agent = secured.victim("car-B")
    await fleet.until_state("car-B", "ticker", "RUNNING", healthy=True, timeout=30)
    await fleet.fact("car-B", "AppHealthy", app="ticker")
    await fleet.until(lambda: len(fleet.lines("car-B", "ticker")) > 3, what="console lines")

    async def kept() -> bool:
        facts = await stored(fleet.js, "SDV_EVENTS", "sdv.evt.agent.car-B.>")
        lines = await stored(fleet.js, "SDV_LOGS", "sdv.logs.car-B.>")
        kinds = {m.subject.rsplit(".", 1)[-1] for m in facts}
        return {"AppInstalled", "AppStarted", "AppHealthy"} <= kinds and len(lines) > 3

    await fleet.until(kept, timeout=10, what="the victim's facts and lines kept by JetStream")
    assert "permissions violation" not in agent.log().lower(), agent.log()
    assert oct((agent.data_dir / "msgid.key").stat().st_mode & 0o777) == "0o600"


async def test_a_device_cannot_list_other_devices_keys(secured: Secured) -> None:
    kv = await secured.fleet.js.key_value(DESIRED_BUCKET)
    await kv.put("car-B", b"{}")
    attacker = await secured.attacker("car-A")
    try:
        for stream in (f"KV_{DESIRED_BUCKET}", f"OBJ_{PACKAGES_BUCKET}", "SDV_EVENTS"):
            await secured.refused(attacker, f"$JS.API.STREAM.INFO.{stream}",
                                  json.dumps({"subjects_filter": ">"}).encode())
        await secured.refused(attacker, "$JS.API.STREAM.NAMES")
        await secured.refused(attacker, "$JS.API.STREAM.LIST")
        # Its own key stays readable (a direct get), another's not.
        await secured.refused(attacker, f"$JS.API.DIRECT.GET.KV_{DESIRED_BUCKET}.$KV.{DESIRED_BUCKET}.car-B")
    finally:
        await attacker.close()


async def test_a_device_cannot_create_a_durable_consumer_or_choose_a_deliver_subject(
    secured: Secured,
) -> None:
    js = secured.fleet.js
    kv = await js.key_value(DESIRED_BUCKET)
    await kv.put("car-A", b'{"planted": true}')
    spied: list[str] = []

    async def spy(msg: Msg) -> None:
        spied.append(msg.subject)

    for subject in ("sdv.device.car-B.ops.stop", "sdv.cmd.registry.decommission"):
        await secured.fleet.nc.subscribe(subject, cb=spy)
    obj, kvs = f"OBJ_{PACKAGES_BUCKET}", f"KV_{DESIRED_BUCKET}"
    durable = {"stream_name": obj, "config": {"durable_name": "squat", "ack_policy": "explicit"}}
    push = {"stream_name": kvs, "config": {
        "name": "push", "deliver_subject": "sdv.device.car-B.ops.stop", "ack_policy": "none",
        "filter_subject": f"$KV.{DESIRED_BUCKET}.car-A", "deliver_policy": "last_per_subject"}}
    attacker = await secured.attacker("car-A")
    try:
        await secured.refused(attacker, f"$JS.API.CONSUMER.DURABLE.CREATE.{obj}.squat",
                              json.dumps(durable).encode())
        await secured.refused(attacker, f"$JS.API.CONSUMER.CREATE.{obj}.squat.$O.{PACKAGES_BUCKET}.C.x",
                              json.dumps(durable).encode())
        await secured.refused(attacker, f"$JS.API.CONSUMER.CREATE.{obj}", json.dumps(durable).encode())
        await secured.refused(attacker, f"$JS.API.CONSUMER.CREATE.{kvs}.push.$KV.{DESIRED_BUCKET}.car-A",
                              json.dumps(push).encode())
        await secured.refused(attacker, f"$JS.API.CONSUMER.CREATE.{kvs}", json.dumps(push).encode())
    finally:
        await attacker.close()
    await asyncio.sleep(0.5)
    assert spied == []
    for stream in (obj, kvs):
        assert (await js.stream_info(stream)).state.consumer_count == 0


async def test_a_device_cannot_read_raw_uploads(secured: Secured) -> None:
    uploads = await secured.fleet.js.object_store(UPLOADS_BUCKET)
    info = await uploads.put("uploads/op-1.tar.gz", b"SDV_TOKEN=operator-secret\n")
    attacker = await secured.attacker("car-A")
    stream = f"OBJ_{UPLOADS_BUCKET}"
    try:
        await secured.refused(attacker, f"$JS.API.DIRECT.GET.{stream}",
                              json.dumps({"seq": 1}).encode())
        await secured.refused(attacker, f"$JS.API.DIRECT.GET.{stream}.$O.{UPLOADS_BUCKET}.C.{info.nuid}")
        await secured.refused(attacker, f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": 1}).encode())
        await secured.refused(attacker, f"$JS.API.CONSUMER.CREATE.{stream}")
    finally:
        await attacker.close()


def desired_get(device_id: str) -> str:
    return f"$JS.API.DIRECT.GET.KV_{DESIRED_BUCKET}.$KV.{DESIRED_BUCKET}.{device_id}"


async def replies_aimed_at(attacker: NatsClient, target: str) -> None:
    """Requests car-A may send, each with `target` as its reply subject (the server checks a
    request's subject against the sender's permissions, never its reply subject): a direct get of
    its own desired key, and a fact whose JetStream ack is the reply. Then a request of its own
    answered, so the server has served the ones before."""
    for _ in range(3):
        await attacker.publish(desired_get("car-A"), b"", reply=target)
        await attacker.publish("sdv.evt.agent.car-A.AppHealthy", b"{}", reply=target)
    await attacker.flush()
    own = await attacker.request(desired_get("car-A"), b"", timeout=2.0)
    assert b"car-A" in own.data  # the attacker's gets are served: only the reply subject differs


async def test_a_device_cannot_write_into_another_devices_desired_key_through_a_reply_subject(
    secured: Secured, harness: Any, tmp_path: Path,
) -> None:
    """While devices were users of the app account, JetStream wrote the answer to car-A's direct
    get into car-B's desired key. Across the account boundary the server replaces the reply
    subject; what it still delivers onto car-B's key subject inside the devices account is only a
    wake-up for car-B's agent, which reads its document from the stream."""
    fleet = secured.fleet
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    await fleet.desire("car-A", 1, {})  # what car-A's direct get answers
    await fleet.desire("car-B", 1, {"ticker": pkg})
    victim = secured.victim("car-B")
    await fleet.until_state("car-B", "ticker", "RUNNING", healthy=True, timeout=30)
    kv = await fleet.js.key_value(DESIRED_BUCKET)
    before = await kv.get("car-B")

    attacker = await secured.attacker("car-A")
    try:
        await replies_aimed_at(attacker, f"$KV.{DESIRED_BUCKET}.car-B")
    finally:
        await attacker.close()
    await asyncio.sleep(0.5)  # nothing is expected: give a wrong write the time it would take

    after = await kv.get("car-B")
    assert (after.revision, after.value) == (before.revision, before.value)
    assert len(await stored(fleet.js, f"KV_{DESIRED_BUCKET}", f"$KV.{DESIRED_BUCKET}.car-B")) == 1
    assert await fleet.app_state("car-B", "ticker") == "RUNNING"
    log = victim.log()
    assert "desired_state_for_another_device" not in log, log  # it never read car-A's document
    assert "desired_state_undecodable" not in log, log  # nor a JetStream ack as one
    assert secured.errors == []  # the attacker used nothing but its own rights


async def test_a_device_cannot_push_a_reply_into_a_service_command_subject(secured: Secured) -> None:
    """Replies aimed at subjects of the app account (commands, another device's facts, its
    announce and heartbeat) reach nobody there: a request crossing into the app account carries
    a reply subject the server made, which leads back into the devices account only."""
    fleet = secured.fleet
    await fleet.desire("car-A", 1, {})
    targets = ["sdv.cmd.registry.decommission", "sdv.cmd.orchestrator.create_rollout",
               "sdv.evt.agent.car-B.AppFailed", "sdv.announce.car-B", "sdv.hb.car-B"]
    spied: list[str] = []

    async def spy(msg: Msg) -> None:
        spied.append(msg.subject)

    assert fleet.nc is not None
    for subject in targets:
        await fleet.nc.subscribe(subject, cb=spy)
    await fleet.nc.flush()
    attacker = await secured.attacker("car-A")
    try:
        for target in targets:
            await replies_aimed_at(attacker, target)
    finally:
        await attacker.close()
    await asyncio.sleep(0.5)  # nothing is expected: give a wrong delivery the time it would take
    assert spied == []
    assert await stored(fleet.js, EVENTS_STREAM, "sdv.evt.agent.car-B.>") == []
    assert secured.errors == []


async def test_a_tampered_upgrade_fails_its_rollout_at_once(fleet: Any, harness: Any, tmp_path: Path) -> None:
    v1 = await fleet.publish(harness.make_app(tmp_path, "tick", "1.0.0", harness.ticker_source("v1")))
    fleet.agent("car-up")
    await fleet.desire("car-up", 1, {"tick": v1})
    await fleet.until_state("car-up", "tick", "RUNNING", healthy=True, timeout=30)

    v2, artifact = fleet.build(harness.make_app(tmp_path, "tick", "2.0.0", harness.ticker_source("v2")))
    tampered = bytearray(artifact)
    tampered[len(tampered) // 2] ^= 0xFF
    await fleet.put_artifact(v2.object_name, bytes(tampered))
    await fleet.desire("car-up", 2, {"tick": v2})  # rollout "r2"

    failed = await fleet.fact("car-up", "AppFailed", app="tick", version="2.0.0")
    assert failed.data.stage == "verify"
    assert failed.data.rollout_id == "r2"  # the upgrade's own rollout, not the one that installed v1
    assert failed.correlation_id == "r2"
    assert fleet.find_facts("car-up", "AppFailed", rollout_id="r1") == []
    await fleet.until_state("car-up", "tick", "RUNNING", healthy=True)  # v1 keeps running
