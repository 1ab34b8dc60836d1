"""Attacks on a vehicle through its desired document and its packages, each performed against a
real agent (issue 11, "the agent trusts only what is signed"). The desired document is signed by
the orchestrator (test_desired_signatures.py refuses everything else); these tests assume a writer
who can sign anyway — a compromised orchestrator — as a second line: whatever it changes in a
document may not change how signed code runs, reach outside the app's own directories, or inflate
an artifact before it is verified.

Sandboxing apps into users and mount namespaces of their own needs root: those tests skip
elsewhere; the others run as any user."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from sdv_edge_agent.adapters.sandbox import APP_UID_BASE, APP_UID_COUNT
from sdv_edge_agent.adapters.store import AgentStore
from sdv_events.schemas.deployment import DesiredApp
from sdv_events.schemas.packages import HealthCheck, PackageInfo, Security

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="users and mount namespaces per app need root")
STAY_UP = "import time\nprint('up', flush=True)\ntime.sleep(120)\n"


def entry(pkg: PackageInfo, revision: int, **fields: Any) -> DesiredApp:
    return DesiredApp(package=pkg, rollout_id=f"r{revision}", **fields)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


# --- the signed description ---------------------------------------------------------------------


@needs_root
async def test_reused_digest_with_unsigned_sandbox_none_is_refused(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    """v1 stays on disk as the previous version of v2; a desired entry reusing v1's signed
    digest but saying sandbox "none" and a health command must not run anything as root — not
    even with the rollback flag that makes going back to v1 legitimate."""
    device = "car-sec1"
    agent = fleet.agent(device)
    v1 = await fleet.publish(harness.make_app(tmp_path, "probe", "1.0.0", STAY_UP))
    v2 = await fleet.publish(harness.make_app(tmp_path, "probe", "2.0.0", STAY_UP + "# v2\n"))
    await fleet.desire(device, 1, {"probe": v1})
    await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="1.0.0")
    await fleet.desire(device, 2, {"probe": v2})
    await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="2.0.0")
    assert any(p.name.startswith("1.0.0-") for p in (agent.data_dir / "apps" / "probe").iterdir())

    pwned = tmp_path / "pwned"
    forged = msgspec.structs.replace(
        v1, security=Security(sandbox="none", network="full"),
        health=HealthCheck(alive_for_s=0.5, command=["sh", "-c", f"id > {pwned}"]),
    )
    await fleet.desire(device, 3, {"probe": entry(forged, 3, rollback=True)})

    failed = await fleet.fact(device, "AppFailed", app="probe", version="1.0.0", desired_revision=3)
    assert failed.data.stage == "verify"
    assert "does not match what was signed" in failed.data.reason
    assert "security" in failed.data.reason
    assert "health" in failed.data.reason
    await asyncio.sleep(1.0)
    assert not pwned.exists()  # the health command never ran
    rep = await fleet.until_state(device, "probe", "RUNNING", version="2.0.0")
    assert rep.healthy
    running = [p for p in harness.processes_under(agent.data_dir) if "python" in p.name()]
    assert running
    assert all(p.uids().real >= APP_UID_BASE for p in running)


# --- app keys -----------------------------------------------------------------------------------


async def test_app_key_that_is_a_path_is_refused_and_nothing_is_touched(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    device = "car-sec2"
    agent = fleet.agent(device)
    victim = tmp_path / "victim"  # = <data dir>/home/../../victim
    victim.mkdir(mode=0o700)
    (victim / "keep.txt").write_text("mine")
    before = victim.stat()
    pkg = await fleet.publish(harness.make_app(tmp_path, "probe", "1.0.0", STAY_UP))
    await fleet.desire(device, 1, {"../../victim": pkg, "other-name": pkg})

    refused = await fleet.fact(device, "AppFailed", app="../../victim")
    assert refused.data.stage == "admission"
    assert "not a valid app name" in refused.data.reason
    renamed = await fleet.fact(device, "AppFailed", app="other-name")
    assert "is not the package's name 'probe'" in renamed.data.reason
    rep = await fleet.until_state(device, "../../victim", "FAILED")
    assert "not a valid app name" in (rep.last_error or "")
    await fleet.until_state(device, "other-name", "FAILED")

    await asyncio.sleep(1.0)
    after = victim.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert (victim / "keep.txt").read_text() == "mine"
    for kind in ("apps", "home", "run", "tmp"):  # nothing was created for either entry
        assert not (agent.data_dir / kind).exists() or not any((agent.data_dir / kind).iterdir())
    assert fleet.fact_types(device) == ["AppFailed", "AppFailed"]  # no download, no start
    assert not fleet.logs  # no console shipped for either
    assert "Traceback" not in agent.log()

    # Removing the entries touches nothing either (no rmtree of the victim).
    await fleet.desire(device, 2, {})
    await fleet.until(lambda: fleet.reported(device), what="a reported state")
    await asyncio.sleep(1.0)
    assert (victim / "keep.txt").read_text() == "mine"


# --- config -------------------------------------------------------------------------------------


async def test_config_cannot_set_loader_variables(fleet: Any, harness: Any, tmp_path: Path) -> None:
    device = "car-sec3"
    agent = fleet.agent(device)
    inject = tmp_path / "inject"
    inject.mkdir()
    marker = tmp_path / "injected"
    (inject / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    inject.chmod(0o755)
    pkg = await fleet.publish(harness.make_app(tmp_path, "probe", "1.0.0", STAY_UP))
    config = {"PYTHONPATH": str(inject), "LD_PRELOAD": "/nonexistent.so", "GREETING": "hi"}
    await fleet.desire(device, 1, {"probe": entry(pkg, 1, config=config)})

    failed = await fleet.fact(device, "AppFailed", app="probe")
    assert failed.data.stage == "admission"
    assert "PYTHONPATH decides what code the app loads" in failed.data.reason
    assert "LD_PRELOAD decides what code the app loads" in failed.data.reason
    await fleet.until_state(device, "probe", "FAILED")
    await asyncio.sleep(1.0)
    assert not marker.exists()
    assert not fleet.find_facts(device, "AppStarted")

    # The same app with harmless config runs; a later refused config leaves it running as it was.
    await fleet.desire(device, 2, {"probe": entry(pkg, 2, config={"GREETING": "hi"})})
    await fleet.until_state(device, "probe", "RUNNING", healthy=True)
    await fleet.desire(device, 3, {"probe": entry(pkg, 3, config={"PYTHONSTARTUP": str(inject / "x.py")})})
    await fleet.fact(device, "AppFailed", app="probe", desired_revision=3)
    async def refusal_reported() -> bool:
        rep = await fleet.reported(device)
        app = rep.apps.get("probe") if rep else None
        return app is not None and app.state == "RUNNING" and "PYTHONSTARTUP" in (app.last_error or "")

    await fleet.until(refusal_reported, what="the refusal in the reported state, the app still running")
    assert len(fleet.find_facts(device, "AppStarted", app="probe")) == 1  # not restarted with it
    assert not marker.exists()
    assert "Traceback" not in agent.log()


# --- private /tmp, process limit, uids ---------------------------------------------------------

TMP_PROBE = """\
import json, os, time
me = os.environ["SDV_APP_NAME"]
for d in ("/tmp", "/var/tmp", "/dev/shm"):
    with open(os.path.join(d, me + "-secret"), "w") as f:
        f.write("secret of " + me)
time.sleep(2.5)  # both apps have written by now
print(json.dumps({d: sorted(os.listdir(d)) for d in ("/tmp", "/var/tmp", "/dev/shm")}
                 | {"TMPDIR": os.environ.get("TMPDIR")}), flush=True)
time.sleep(120)
"""


@needs_root
async def test_apps_do_not_share_tmp(fleet: Any, harness: Any, tmp_path: Path) -> None:
    device = "car-sec4"
    fleet.agent(device)
    host_files = [Path(d) / f"host-{uuid.uuid4().hex}" for d in ("/tmp", "/var/tmp", "/dev/shm")]
    for path in host_files:
        path.write_text("the host's")
    try:
        a = await fleet.publish(harness.make_app(tmp_path, "tmp-a", "1.0.0", TMP_PROBE))
        b = await fleet.publish(harness.make_app(tmp_path, "tmp-b", "1.0.0", TMP_PROBE))
        await fleet.desire(device, 1, {"tmp-a": a, "tmp-b": b})
        seen = {}
        for app in ("tmp-a", "tmp-b"):
            line = await fleet.until(lambda app=app: next(
                (x for x in fleet.lines(device, app) if x.startswith("{")), None), what=f"{app}'s view")
            seen[app] = json.loads(line)
        for app, other in (("tmp-a", "tmp-b"), ("tmp-b", "tmp-a")):
            view = seen[app]
            assert view["TMPDIR"] == "/tmp"
            for d in ("/tmp", "/var/tmp", "/dev/shm"):
                assert f"{app}-secret" in view[d]
                assert f"{other}-secret" not in view[d]  # not another app's
                assert not any(name.startswith("host-") for name in view[d])  # nor the host's
        for d in ("/tmp", "/var/tmp", "/dev/shm"):  # nor does the host see the apps'
            assert not (Path(d) / "tmp-a-secret").exists()
    finally:
        for path in host_files:
            path.unlink(missing_ok=True)


FORK_PROBE = """\
import os, signal, time
children = []
while len(children) < 400:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
print("forked", len(children), flush=True)
time.sleep(120)
"""


@needs_root
async def test_standard_sandbox_caps_the_number_of_processes(fleet: Any, harness: Any, tmp_path: Path) -> None:
    device = "car-sec5"
    fleet.agent(device)
    pkg = await fleet.publish(harness.make_app(tmp_path, "forker", "1.0.0", FORK_PROBE, memory="512MB",
                                               security={"sandbox": "standard"}))
    await fleet.desire(device, 1, {"forker": pkg})
    line = await fleet.until(lambda: next((x for x in fleet.lines(device, "forker") if x.startswith("forked")),
                                          None), timeout=60, what="the fork count")
    assert 200 <= int(line.split()[1]) < 256  # RLIMIT_NPROC 256 for the app's own uid


@needs_root
async def test_app_uids_never_wrap_into_another_apps_uid(fleet: Any, harness: Any, tmp_path: Path) -> None:
    device = "car-sec6"
    data_dir = tmp_path / device
    store = AgentStore(data_dir / "agent.db")  # a device that has seen every uid of its range
    store.set_meta("uid:first-app", str(APP_UID_BASE).encode())
    store.db.execute("INSERT INTO counters (key, value) VALUES ('app_uid', ?)", (APP_UID_COUNT,))
    store.close()
    fleet.agent(device)
    first = await fleet.publish(harness.make_app(tmp_path, "first-app", "1.0.0", STAY_UP))
    late = await fleet.publish(harness.make_app(tmp_path, "late-app", "1.0.0", STAY_UP))
    await fleet.desire(device, 1, {"first-app": first, "late-app": late})

    failed = await fleet.fact(device, "AppFailed", app="late-app")
    assert failed.data.stage == "start"
    assert "no app uid left" in failed.data.reason
    rep = await fleet.until_state(device, "first-app", "RUNNING", healthy=True)
    assert psutil.Process(rep.pid).uids().real == APP_UID_BASE  # its own uid, kept
    assert not fleet.find_facts(device, "AppStarted", app="late-app")


# --- versions -----------------------------------------------------------------------------------


async def test_downgrade_without_rollback_flag_is_refused(fleet: Any, harness: Any, tmp_path: Path) -> None:
    device = "car-sec7"
    fleet.agent(device)
    v1 = await fleet.publish(harness.make_app(tmp_path, "probe", "1.0.0", STAY_UP))
    v2 = await fleet.publish(harness.make_app(tmp_path, "probe", "1.10.0", STAY_UP + "# v2\n"))
    await fleet.desire(device, 1, {"probe": v2})
    await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="1.10.0")

    await fleet.desire(device, 2, {"probe": v1})
    failed = await fleet.fact(device, "AppFailed", app="probe", version="1.0.0")
    assert failed.data.stage == "verify"
    assert "older than the active 1.10.0" in failed.data.reason
    assert "rollback flag" in failed.data.reason
    rep = await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="1.10.0")
    assert rep.version == "1.10.0"

    # The orchestrator's rollback says so: then the device goes back.
    await fleet.desire(device, 3, {"probe": entry(v1, 3, rollback=True)})
    await fleet.until_state(device, "probe", "RUNNING", healthy=True, version="1.0.0")


# --- decompression bombs ------------------------------------------------------------------------

BOMB_MB = 300


def _zeros_member(tar: tarfile.TarFile, name: str, size: int) -> None:
    class Zeros(io.RawIOBase):
        left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    info = tarfile.TarInfo(name)
    info.size = size
    tar.addfile(info, io.BufferedReader(Zeros(), 1 << 20))


def _tar_gz(members: list[tuple[str, bytes | int]]) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as gz, \
            tarfile.open(fileobj=gz, mode="w|") as tar:
        for name, content in members:
            if isinstance(content, int):
                _zeros_member(tar, name, content)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


async def _bomb_package(fleet: Any, pkg: PackageInfo, bomb: bytes) -> PackageInfo:
    digest = hashlib.sha256(bomb).hexdigest()
    forged = msgspec.structs.replace(pkg, digest=digest, size=len(bomb),
                                     object_name=f"{pkg.name}/bomb-{digest[:16]}.tar.gz")
    await fleet.put_artifact(forged.object_name, bomb)
    return forged


async def test_decompression_bomb_is_refused_before_it_is_inflated(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    """Two bombs of ~300 KB that inflate to 300 MB: one unsigned (zeros where the signed manifest
    should come first), one behind a genuinely signed manifest (a member it does not list). Both
    are refused, and the agent's peak RSS never gets near what they inflate to."""
    device = "car-sec8"
    agent = fleet.agent(device)
    pkg, artifact = fleet.build(harness.make_app(tmp_path, "probe", "1.0.0", STAY_UP))
    with tarfile.open(fileobj=io.BytesIO(artifact), mode="r:gz") as tar:
        signed = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]  # type: ignore[union-attr]
    assert signed[0][0] == "package.json"
    unsigned_bomb = _tar_gz([("zeros.bin", BOMB_MB << 20), *signed])
    signed_bomb = _tar_gz([signed[0], ("zeros.bin", BOMB_MB << 20), *signed[1:]])
    assert len(unsigned_bomb) < 1 << 20
    assert len(signed_bomb) < 1 << 20

    await fleet.until(lambda: agent.process.pid and Path(f"/proc/{agent.process.pid}/status").exists())
    await asyncio.sleep(1.0)
    baseline = peak_rss_mb(agent.process.pid)
    first = await _bomb_package(fleet, pkg, unsigned_bomb)
    await fleet.desire(device, 1, {"probe": first})
    failed = await fleet.fact(device, "AppFailed", app="probe", desired_revision=1, timeout=30)
    assert failed.data.stage == "verify"
    assert "the first member is 'zeros.bin', not package.json" in failed.data.reason

    second = await _bomb_package(fleet, pkg, signed_bomb)
    await fleet.desire(device, 2, {"probe": second})
    failed = await fleet.fact(device, "AppFailed", app="probe", desired_revision=2, timeout=30)
    assert failed.data.stage == "verify"
    assert "'zeros.bin' is not in the signed manifest" in failed.data.reason

    peak = peak_rss_mb(agent.process.pid)
    assert peak - baseline < 50, (baseline, peak)  # not the 300 MB the bombs inflate to
    assert not (agent.data_dir / "apps" / "probe").exists()
    await fleet.put_artifact(pkg.object_name, artifact)
    await fleet.desire(device, 3, {"probe": pkg})  # the genuine package still installs
    await fleet.until_state(device, "probe", "RUNNING", healthy=True)
