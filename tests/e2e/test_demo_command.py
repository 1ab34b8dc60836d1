"""`sdv demo` with nothing running (issue 13): on a fresh data dir it starts the embedded suite
and three real agents itself, rolls the example app out as a canary to all three, rolls a
version that crashes on purpose back, prints one JSON object last, exits 0 — and leaves no
process behind (its agents' apps included)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SDV = Path(sys.executable).parent / "sdv"


def test_sdv_demo_on_a_fresh_data_dir_upgrades_every_device_and_rolls_a_broken_version_back() -> None:
    # Not under pytest's base temp dir, which is owner-only: the apps run as users of their own.
    root = Path(tempfile.mkdtemp(prefix="sdv-demo-test-"))
    root.chmod(0o711)
    data_dir = root / "data"
    env = {k: v for k, v in os.environ.items()
           if k not in ("SDV_NATS_URL", "SDV_DATABASE_URL", "SDV_NATS_CREDS", "SDV_NATS_CA")}
    try:
        done = subprocess.run([str(SDV), "demo", "--agents", "3", "--data-dir", str(data_dir), "--json"],
                              env=env, capture_output=True, text=True, timeout=240, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["ok"] is True
        assert (result["devices"], result["upgraded"]) == (3, 3)
        assert result["rolled_back"] >= 1
        assert result["statuses"] == {"upgrade": "completed", "broken": "rolled_back"}
        assert result["console_lines"] >= 3  # a hello from each device at least
        assert "hello from car-" in done.stderr  # the narration (stderr under --json) shows them
        left = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                if str(data_dir) in " ".join(p.info["cmdline"] or [])]
        assert not left, left
        assert not (data_dir / "suite.json").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
