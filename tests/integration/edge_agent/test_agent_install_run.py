"""Install → run → console on the bus, with real signed packages and a real agent process."""

from __future__ import annotations

from pathlib import Path
from typing import Any


async def test_desired_app_is_installed_started_healthy_and_its_stdout_streams(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    agent = fleet.agent("car-1")
    await fleet.desire("car-1", 1, {"ticker": pkg})

    await fleet.fact("car-1", "AppHealthy", app="ticker")
    assert fleet.fact_types("car-1", "ticker")[:4] == ["AppDownloadStarted", "AppInstalled", "AppStarted",
                                                       "AppHealthy"]
    started = await fleet.fact("car-1", "AppStarted", app="ticker")
    assert started.stream_id == "agent-car-1"
    assert started.data.desired_revision == 1
    assert started.data.digest == pkg.digest
    rep = await fleet.until_state("car-1", "ticker", "RUNNING", healthy=True)
    assert rep.version == "1.0.0"
    assert rep.pid == started.data.pid

    # Console lines arrive on the bus within 100 ms of being printed (they carry their print time).
    await fleet.until(lambda: len(fleet.lines("car-1", "ticker")) > 20, what="20 ticks on the bus")
    received = {m.line: m.received for m in fleet.logs if m.subject == "sdv.logs.car-1.ticker.stdout"}
    delays = sorted(received[line] - float(line.split()[2]) for line in received if line.startswith("tick "))
    assert delays[len(delays) // 2] < 0.1, delays
    assert fleet.lines("car-1", "ticker")[0].startswith("ticker 1.0.0")
    # Every line exactly once, in order.
    ticks = [int(line.split()[1]) for line in fleet.lines("car-1", "ticker") if line.startswith("tick ")]
    assert ticks == list(range(1, len(ticks) + 1))
    # Versions of the device's fact stream count up from 1, with no gap.
    versions = [f.version for f in fleet.facts if f.stream_id == "agent-car-1"]
    assert versions == list(range(1, len(versions) + 1))
    assert "Traceback" not in agent.log()


async def test_stop_then_uninstall_leaves_no_process_and_no_files(fleet: Any, harness: Any, tmp_path: Path) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "ticker", "1.0.0", harness.ticker_source()))
    agent = fleet.agent("car-2")
    await fleet.desire("car-2", 1, {"ticker": pkg})
    rep = await fleet.until_state("car-2", "ticker", "RUNNING", healthy=True)
    assert harness.processes_under(agent.data_dir)
    assert (agent.data_dir / "apps" / "ticker").is_dir()

    await fleet.desire("car-2", 2, {"ticker": (pkg, "paused")})
    await fleet.fact("car-2", "AppPaused", app="ticker")
    await fleet.until_state("car-2", "ticker", "PAUSED")
    await fleet.desire("car-2", 3, {"ticker": (pkg, "stopped")})  # a frozen app still stops gracefully
    stopped = await fleet.fact("car-2", "AppStopped", app="ticker")
    assert stopped.data.exit_code == 0  # SIGTERM handled: a graceful stop
    await fleet.until_state("car-2", "ticker", "STOPPED")
    assert not harness.processes_under(agent.data_dir)
    assert fleet.lines("car-2", "ticker")[-1] == "bye"  # its last words were not lost

    await fleet.desire("car-2", 4, {})
    await fleet.fact("car-2", "AppUninstalled", app="ticker")
    await fleet.until(lambda: fleet.reported("car-2"), what="reported")
    await fleet.until(lambda: _no_apps(fleet, "car-2"), what="no apps reported")
    assert not (agent.data_dir / "apps" / "ticker").exists()
    assert not (agent.data_dir / "run" / "ticker").exists()
    assert not (agent.data_dir / "home" / "ticker").exists()
    assert not harness.processes_under(agent.data_dir)
    assert agent.records() == {}
    assert rep.pid is not None


async def _no_apps(fleet: Any, device: str) -> bool:
    rep = await fleet.reported(device)
    return rep is not None and rep.apps == {} and rep.desired_revision == 4


async def test_tampered_artifact_is_refused_and_nothing_of_it_runs(fleet: Any, harness: Any, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    evil = harness.make_app(tmp_path, "evil", "1.0.0", f"open({str(marker)!r}, 'w').write('ran')\n")
    info, artifact = fleet.build(evil)
    # Same bytes, one flipped somewhere in the middle: the digest no longer matches.
    tampered = bytearray(artifact)
    tampered[len(tampered) // 2] ^= 0xFF
    await fleet.put_artifact(info.object_name, bytes(tampered))
    agent = fleet.agent("car-3")
    await fleet.desire("car-3", 1, {"evil": info})

    failed = await fleet.fact("car-3", "AppFailed", app="evil")
    assert failed.data.stage == "verify"
    assert "sha256" in failed.data.reason
    await fleet.until_state("car-3", "evil", "FAILED")
    assert not marker.exists()
    assert not (agent.data_dir / "apps" / "evil").exists() or not any((agent.data_dir / "apps" / "evil").iterdir())
    assert "AppStarted" not in fleet.fact_types("car-3", "evil")


async def test_a_desired_document_cannot_change_how_signed_code_runs(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    """The desired state's package description is not signed: its sandbox, health command or
    entry point differing from the signed manifest refuses the version before anything runs."""
    from sdv_events.schemas.packages import HealthCheck, Security

    marker = tmp_path / "escaped"
    info, artifact = fleet.build(harness.make_app(tmp_path, "meek", "1.0.0", harness.ticker_source("meek")))
    await fleet.put_artifact(info.object_name, artifact)
    sneaky = msgspec_replace(
        info, security=Security("none", "full"),
        health=HealthCheck(command=["/bin/sh", "-c", f"touch {marker}"]),
    )
    fleet.agent("car-5")
    await fleet.desire("car-5", 1, {"meek": sneaky})
    failed = await fleet.fact("car-5", "AppFailed", app="meek")
    assert failed.data.stage == "verify"
    assert "does not match what was signed" in failed.data.reason
    assert "security" in failed.data.reason
    assert "health" in failed.data.reason
    await fleet.until_state("car-5", "meek", "FAILED")
    assert not marker.exists()
    assert "AppStarted" not in fleet.fact_types("car-5", "meek")


async def test_package_signed_by_another_key_is_refused(fleet: Any, harness: Any, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sdv_packager.signing import Signer

    marker = tmp_path / "executed"
    app = harness.make_app(tmp_path, "forged", "1.0.0", f"open({str(marker)!r}, 'w').write('ran')\n")
    info, artifact = fleet.build(app)
    forger = Signer(Ed25519PrivateKey.generate())
    forged = msgspec_replace(info, signature=forger.sign(info.manifest_digest), key_id=forger.key_id)
    await fleet.put_artifact(info.object_name, artifact)
    fleet.agent("car-4")
    await fleet.desire("car-4", 1, {"forged": forged})
    failed = await fleet.fact("car-4", "AppFailed", app="forged")
    assert failed.data.stage == "verify"
    assert "signature" in failed.data.reason
    assert not marker.exists()


def msgspec_replace(struct: Any, **changes: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(struct, **changes)


async def test_missing_artifact_fails_the_download_and_a_new_rollout_retries(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    info, artifact = fleet.build(harness.make_app(tmp_path, "late", "1.0.0", harness.ticker_source()))
    fleet.agent("car-5")
    await fleet.desire("car-5", 1, {"late": info})  # the artifact was never uploaded
    failed = await fleet.fact("car-5", "AppFailed", app="late")
    assert failed.data.stage == "download"
    await fleet.until_state("car-5", "late", "FAILED")
    await fleet.put_artifact(info.object_name, artifact)
    await fleet.desire("car-5", 2, {"late": info})  # a new rollout (r2) asks again
    await fleet.until_state("car-5", "late", "RUNNING", healthy=True)


async def test_a_package_for_a_runtime_this_device_lacks_is_refused(fleet: Any, harness: Any, tmp_path: Path) -> None:
    pkg = await fleet.publish(harness.make_app(tmp_path, "boxed", "1.0.0", "print('hi')\n", runtime="docker"))
    fleet.agent("car-6")
    await fleet.desire("car-6", 1, {"boxed": pkg})
    failed = await fleet.fact("car-6", "AppFailed", app="boxed")
    assert failed.data.stage == "install"
    assert failed.data.reason == "needs the docker runtime; the docker runtime is not available on this device (it runs native apps only)"
    assert "AppDownloadStarted" not in fleet.fact_types("car-6", "boxed")
