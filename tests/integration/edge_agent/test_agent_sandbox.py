"""`security.sandbox` and `security.network` as the native runtime enforces them: a user per app,
no way back to privileges, only its HOME writable, an empty network for network = "none"
(real agent, real processes; switching users needs root, so these skip elsewhere)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sdv_events.schemas.deployment import DesiredApp

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxing apps into users of their own needs root")

# Reports what it may do, as one JSON line, then stays up.
PROBE = """\
import json, os, socket, sys, time
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return type(exc).__name__
def connect():
    host, port = os.environ["PROBE_ADDR"].split(":")
    socket.create_connection((host, int(port)), timeout=2).close()
def write_own_code():
    open("main.py", "a").close()
def write_home():
    with open(os.path.join(os.environ["HOME"], "state.txt"), "w") as f:
        f.write("kept")
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "no_new_privs": status.get("NoNewPrivs", "").strip(),
    "read_agent_db": attempt(lambda: open(os.environ["PROBE_DB"], "rb").read(1)),
    "write_own_code": attempt(write_own_code),
    "write_home": attempt(write_home),
    "connect": attempt(connect),
}), flush=True)
time.sleep(60)
"""


async def probe(fleet: Any, harness: Any, tmp_path: Path, device: str, security: dict[str, str]) -> dict[str, Any]:
    agent = fleet.agent(device)
    pkg = await fleet.publish(harness.make_app(tmp_path, "probe", "1.0.0", PROBE, security=security))
    nats_addr = fleet.nats_url.removeprefix("nats://")
    config = {"PROBE_DB": str(agent.data_dir / "agent.db"), "PROBE_ADDR": nats_addr}
    await fleet.desire(device, 1, {"probe": DesiredApp(package=pkg, config=config, rollout_id="r1")})
    await fleet.until(lambda: any(line.startswith("{") for line in fleet.lines(device, "probe")),
                      what="the probe's report")
    return json.loads(next(line for line in fleet.lines(device, "probe") if line.startswith("{")))


async def test_standard_sandbox_runs_the_app_as_its_own_user_with_only_its_home_writable(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    seen = await probe(fleet, harness, tmp_path, "car-sb1", {"sandbox": "standard", "network": "kuksa-only"})
    assert seen["uid"] >= 61184
    assert seen["gid"] == seen["uid"]
    assert seen["groups"] == []
    assert seen["no_new_privs"] == "1"
    assert seen["read_agent_db"] == "PermissionError"  # the agent's database (app config, secrets)
    assert seen["write_own_code"] == "PermissionError"  # its installed version is read-only to it
    assert seen["write_home"] == "ok"
    assert seen["connect"] == "ok"  # kuksa-only keeps the host network (not filtered: documented)
    home = fleet.agent("car-sb1").data_dir / "home" / "probe"
    assert (home / "state.txt").stat().st_uid == seen["uid"]


async def test_network_none_gives_the_app_no_network_at_all(fleet: Any, harness: Any, tmp_path: Path) -> None:
    seen = await probe(fleet, harness, tmp_path, "car-sb2", {"sandbox": "strict", "network": "none"})
    assert seen["uid"] >= 61184
    assert seen["connect"] in ("OSError", "ConnectionRefusedError", "TimeoutError")  # not even loopback
    assert seen["write_home"] == "ok"


async def test_network_none_holds_even_without_a_sandbox(fleet: Any, harness: Any, tmp_path: Path) -> None:
    seen = await probe(fleet, harness, tmp_path, "car-sb5", {"sandbox": "none", "network": "none"})
    assert seen["uid"] == os.geteuid()
    assert seen["connect"] in ("OSError", "ConnectionRefusedError", "TimeoutError")


async def test_sandbox_none_runs_the_app_as_the_agent_and_the_uid_is_kept_per_app(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    seen = await probe(fleet, harness, tmp_path, "car-sb3", {"sandbox": "none", "network": "full"})
    assert seen["uid"] == os.geteuid()
    assert seen["read_agent_db"] == "ok"
    assert seen["no_new_privs"] == "0"


async def test_an_app_that_cannot_start_fails_once_with_the_reason_and_is_not_retried_in_a_loop(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    agent = fleet.agent("car-sb4")
    pkg = await fleet.publish(harness.make_app(tmp_path, "probe", "1.0.0", PROBE))
    shut = agent.data_dir.parent
    shut.chmod(0o700)  # the app's user cannot get through to its own files
    try:
        await fleet.desire("car-sb4", 1, {"probe": pkg})
        failed = await fleet.fact("car-sb4", "AppFailed", app="probe")
        assert failed.data.stage == "start"
        assert "must be searchable by other users" in failed.data.reason
        await fleet.until_state("car-sb4", "probe", "FAILED")
        await asyncio.sleep(1.5)
        assert len(fleet.find_facts("car-sb4", "AppFailed", app="probe")) == 1
        assert not fleet.find_facts("car-sb4", "AppStarted", app="probe")
    finally:
        shut.chmod(0o711)


async def test_a_sandbox_that_cannot_be_entered_is_a_typed_error_and_nothing_runs(tmp_path: Path) -> None:
    import sys

    from sdv_edge_agent.adapters.native import NativeRuntime, SetupFailed
    from sdv_edge_agent.ports import RunSpec, Sandbox

    marker = tmp_path / "ran"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "main.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    impossible = Sandbox("standard", uid=2**40, gid=2**40)  # no such user can exist
    spec = RunSpec(app="nope", version="1", argv=[sys.executable, "main.py"], cwd=app_dir,
                   env={"PATH": os.environ["PATH"]}, run_dir=tmp_path / "run", memory_mb=64, cpu=0.5,
                   sandbox=impossible)
    with pytest.raises(SetupFailed, match="sandbox could not be set up"):
        await NativeRuntime().start(spec)
    assert not marker.exists()
