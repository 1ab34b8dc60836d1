"""Whoever can write KV `sdv_desired` (service credentials, a network attacker without TLS) must
not decide what a vehicle runs: the agent acts only on documents the orchestrator's key signed for
this device, with a revision not older than the newest it accepted (issue #11). Each attack is run
against a real agent process on a real NATS; the `Fleet` plays the orchestrator with a key of its
own (`sdv_events.desired_signing`, the code the orchestrator signs with), which its agents pin.

Every refusal leaves what runs running (same process), is logged with its cause, is reported as a
`DesiredRefused` fact and as `desired_refused` in the device's reported state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdv_events.desired_signing import DesiredSigner
from sdv_events.package_format import sha256_hex
from sdv_events.schemas.deployment import DesiredApp, DesiredState
from sdv_events.schemas.packages import PackageInfo

STAY_UP = "import time\nprint('up', flush=True)\ntime.sleep(120)\n"
QUIET_S = 1.0  # how long nothing may happen after a refusal (a refused document starts nothing)


Started = tuple[Any, PackageInfo, PackageInfo, int]


async def running_v1_then(fleet: Any, harness: Any, tmp_path: Path, device: str) -> Started:
    """A device running probe 1.0.0 from a signed revision 1; v2 published. (agent, v1, v2, pid)"""
    agent = fleet.agent(device)
    v1 = await fleet.publish(harness.make_app(tmp_path, "probe", "1.0.0", STAY_UP))
    v2 = await fleet.publish(harness.make_app(tmp_path, "probe", "2.0.0", STAY_UP + "# v2\n"))
    await fleet.desire(device, 1, {"probe": v1})
    running = await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="1.0.0")
    return agent, v1, v2, running.pid


async def refused(fleet: Any, device: str, cause: str, **match: Any) -> Any:
    """The DesiredRefused fact with this cause, and the reported state saying so."""
    fact = await fleet.fact(device, "DesiredRefused", cause=cause, **match)

    async def reported() -> Any:
        state = await fleet.reported(device)
        return state if state and (state.desired_refused or "").startswith(f"{cause}:") else None

    await fleet.until(reported, 10, f"{device} reporting the refusal ({cause})")
    return fact


async def still_running(fleet: Any, device: str, version: str, pid: int) -> None:
    """After a quiet period: the same process of `version` runs, and no other version was touched."""
    await asyncio.sleep(QUIET_S)
    state = await fleet.reported(device)
    app = state.apps["probe"]
    assert (app.state, app.version, app.pid) == ("RUNNING", version, pid), app
    others = [f.type for f in fleet.facts if f.data.device_id == device
              and getattr(f.data, "app", None) == "probe" and f.data.version != version
              and f.type.split(".")[1] in ("AppDownloadStarted", "AppInstalled", "AppStarted")
              and f.data.desired_revision > state.desired_revision]
    assert others == []


def signed_value(fleet: Any, device: str, revision: int, apps: dict[str, DesiredApp]) -> bytes:
    return fleet.orchestrator.sign(DesiredState(device_id=device, revision=revision, apps=apps))  # type: ignore[no-any-return]


async def test_an_unsigned_desired_document_is_refused_and_nothing_changes(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    device = "car-sig1"
    agent, _, v2, pid = await running_v1_then(fleet, harness, tmp_path, device)

    # What any holder of service credentials could write before: a plain DesiredState.
    unsigned = DesiredState(device_id=device, revision=2, apps={"probe": DesiredApp(package=v2)})
    await fleet.put_desired(device, msgspec.json.encode(unsigned))
    fact = await refused(fleet, device, "unsigned")
    assert (fact.data.accepted_revision, fact.data.revision) == (1, None)
    await still_running(fleet, device, "1.0.0", pid)
    assert (await fleet.reported(device)).desired_revision == 1
    assert "desired_document_refused" in agent.log()
    assert "cause=unsigned" in agent.log() or '"cause": "unsigned"' in agent.log()

    # Signed by the orchestrator, the same change is taken, and the refusal is cleared.
    await fleet.desire(device, 2, {"probe": v2})
    await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="2.0.0")
    assert (await fleet.reported(device)).desired_refused is None


async def test_a_desired_document_signed_by_another_key_is_refused(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    device = "car-sig2"
    _, _, v2, pid = await running_v1_then(fleet, harness, tmp_path, device)
    apps = {"probe": DesiredApp(package=v2)}
    attacker = DesiredSigner(Ed25519PrivateKey.generate())
    # The packager's key signs packages, never what a device runs: refused as any other key.
    packager = DesiredSigner(fleet.signer._key)
    for revision, signer in ((2, attacker), (3, packager)):
        value = signer.sign(DesiredState(device_id=device, revision=revision, apps=apps))
        await fleet.put_desired(device, value)
        fact = await fleet.fact(device, "DesiredRefused", digest=sha256_hex(value))
        assert (fact.data.cause, fact.data.accepted_revision) == ("unknown_key", 1)
        assert fact.data.revision is None  # nothing of an untrusted document is believed
        assert signer.key_id in fact.data.reason
    await refused(fleet, device, "unknown_key")
    await still_running(fleet, device, "1.0.0", pid)


async def test_a_replayed_older_desired_document_is_refused(fleet: Any, harness: Any, tmp_path: Path) -> None:
    """Old documents are validly signed: only the revision tells them apart. The agent keeps the
    newest revision it accepted in SQLite, so a restart does not make an old one acceptable."""
    device = "car-sig3"
    agent, v1, v2, _ = await running_v1_then(fleet, harness, tmp_path, device)
    revision_1 = signed_value(fleet, device, 1, {"probe": DesiredApp(package=v1, rollout_id="r1")})
    revision_2 = signed_value(fleet, device, 2, {"probe": DesiredApp(package=v1, config={"MODE": "eco"},
                                                                     rollout_id="r1")})
    await fleet.put_desired(device, revision_2)
    await fleet.until(lambda: _config_applied(fleet, device), 15, "revision 2 applied")
    await fleet.desire(device, 3, {"probe": v2})
    running = await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="2.0.0")

    await fleet.put_desired(device, revision_1)
    fact = await refused(fleet, device, "replayed", revision=1)
    assert fact.data.accepted_revision == 3
    await still_running(fleet, device, "2.0.0", running.pid)

    # Restarted while another old document waits in its key: still refused, v2 re-adopted.
    assert agent.stop() == 0
    await fleet.put_desired(device, revision_2)
    agent.start()
    await refused(fleet, device, "replayed", revision=2, accepted_revision=3)
    await still_running(fleet, device, "2.0.0", running.pid)
    assert (await fleet.reported(device)).desired_revision == 3


async def _config_applied(fleet: Any, device: str) -> bool:
    state = await fleet.reported(device)
    return state is not None and state.desired_revision == 2


async def test_a_forged_rollback_flag_cannot_downgrade(fleet: Any, harness: Any, tmp_path: Path) -> None:
    """The rollback flag is what lets a device go back to an older version: written by anyone
    but the orchestrator — into a signed document or an unsigned one — it is refused whole."""
    device = "car-sig4"
    _, v1, v2, _ = await running_v1_then(fleet, harness, tmp_path, device)
    await fleet.desire(device, 2, {"probe": v2})
    running = await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="2.0.0")
    kv = await fleet.js.key_value("sdv_desired")
    genuine = msgspec.json.decode((await kv.get(device)).value)

    forged = dict(genuine)  # the orchestrator's signature kept, the document edited
    forged["document"] = {**genuine["document"], "revision": 3, "apps": {"probe": msgspec.to_builtins(
        DesiredApp(package=v1, rollout_id="r2", rollback=True))}}
    await fleet.put_desired(device, msgspec.json.encode(forged))
    await refused(fleet, device, "bad_signature")
    await fleet.put_desired(device, msgspec.json.encode(forged["document"]))
    await refused(fleet, device, "unsigned")
    await still_running(fleet, device, "2.0.0", running.pid)
    assert not fleet.find_facts(device, "AppFailed", version="1.0.0")  # never even considered

    # The orchestrator's own, signed rollback does take the device back.
    await fleet.desire(device, 3, {"probe": DesiredApp(package=v1, rollout_id=None, rollback=True)})
    await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="1.0.0")


async def test_a_document_for_another_device_is_refused(fleet: Any, harness: Any, tmp_path: Path) -> None:
    """A genuine document of another device, copied into this device's key (e.g. by a reply
    pushed into it), is refused: the signature covers the device id."""
    device = "car-sig5"
    _, _, v2, pid = await running_v1_then(fleet, harness, tmp_path, device)
    await fleet.put_desired(device, signed_value(fleet, "car-other", 7, {"probe": DesiredApp(package=v2)}))
    fact = await refused(fleet, device, "other_device", revision=7)
    assert "car-other" in fact.data.reason
    await still_running(fleet, device, "1.0.0", pid)


async def test_simulated_agents_verify_desired_documents_too(fleet: Any, harness: Any, tmp_path: Path) -> None:
    """`--simulate N` runs the real agent code: the same checks, per simulated device."""
    pkg = await fleet.publish(harness.make_app(tmp_path, "probe", "1.0.0", "print('probe')\n"))
    sim = fleet.simulator(2)
    trusted, untrusted = sim.device_ids
    await fleet.desire(trusted, 1, {"probe": pkg})
    await fleet.put_desired(untrusted, msgspec.json.encode(
        DesiredState(device_id=untrusted, revision=1, apps={"probe": DesiredApp(package=pkg)})))
    await fleet.until_state(trusted, "probe", "RUNNING", healthy=True, version="1.0.0", timeout=30)
    await refused(fleet, untrusted, "unsigned")
    state = await fleet.reported(untrusted)
    assert state.apps == {}
