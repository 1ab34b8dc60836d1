"""The whole suite on real NATS and PostgreSQL: every service starts, answers ping, and the
supervisor notices a service that died and brings it back. (Operator-mode security of the
embedded NATS: test_suite_security.py.)"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sdv_client.health import SERVICES
from sdv_client.suite import Suite

pytestmark = pytest.mark.timeout(60)
SDV = Path(sys.executable).parent / "sdv"


async def test_every_service_answers_and_a_killed_one_is_reported_down(
    nats_url: str, database_url: str
) -> None:
    async with Suite(nats_url=nats_url, database_url=database_url) as suite:
        statuses = await suite.wait_ready(timeout=45)
        assert {s.service: s.state for s in statuses} == dict.fromkeys(SERVICES, "up")
        assert all(s.version and s.pid for s in statuses)
        # The monitor's HTTP API listens on the port the suite gave it and says what it sees.
        async with httpx.AsyncClient(base_url=str(suite.monitor_url), timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
            status = (await http.get("/api/status")).json()
            assert {"devices", "online", "active_rollouts"} <= status.keys()

        victim = suite.processes["monitor"]
        old_pid = victim.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        victim.process.wait(10)  # type: ignore[union-attr]

        by_name = {s.service: s for s in await suite.status()}
        assert by_name["monitor"].state == "down"
        assert by_name["monitor"].detail == f"exited with code {-signal.SIGKILL}"
        assert all(by_name[n].state == "up" for n in SERVICES if n != "monitor")

        notes = await suite.supervise()  # the first restart comes at once (children.py)
        assert [n.split()[0] for n in notes] == ["monitor"], notes
        statuses = await suite.wait_ready(timeout=30)
        monitor = next(s for s in statuses if s.service == "monitor")
        assert monitor.state == "up"
        assert monitor.pid not in (None, old_pid)


def test_sdv_up_check_json_starts_everything_and_stops(tmp_path: Path) -> None:
    """What CI and the README run: embedded servers (unless SDV_* URLs are set), all pings, stop."""
    result = subprocess.run(
        [str(SDV), "up", "--check", "--json", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=55, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [s["service"] for s in report["services"]] == list(SERVICES)
    assert all(s["state"] == "up" for s in report["services"])
    pids = [s["pid"] for s in report["services"]]
    for pid in pids:  # stopped, not left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(f"{n}.log" for n in SERVICES)
    # What agents pin (--orchestrator-key-file): the orchestrator's own key, not the packager's.
    keys = tmp_path / "keys"
    assert report["orchestrator_key_file"] == str(keys / "orchestrator-ed25519.pub")
    assert stat.S_IMODE((keys / "orchestrator-ed25519.pem").stat().st_mode) == 0o600
    assert (keys / "orchestrator-ed25519.pub").read_text().strip()
    assert (keys / "orchestrator-ed25519.pem").read_bytes() != (keys / "packager-ed25519.pem").read_bytes()
    if "SDV_NATS_URL" not in os.environ:  # embedded NATS in operator mode over TLS: keys kept, owner-only
        nats_dir = tmp_path / "nats"
        assert report["nats_creds"] == str(nats_dir / "operator.creds")
        assert report["enrol_creds"] == str(nats_dir / "enrol.creds")
        assert report["nats_ca"] == str(nats_dir / "tls" / "ca.pem")
        assert report["nats_url"].startswith("tls://127.0.0.1:")
        for name in ("trust.json", "operator.creds", "enrol.creds", "tls/ca-key.pem", "tls/server-key.pem",
                     *(f"services/{service}.creds" for service in SERVICES)):
            assert stat.S_IMODE((nats_dir / name).stat().st_mode) == 0o600, name
