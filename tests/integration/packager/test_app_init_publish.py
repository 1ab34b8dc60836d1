"""`sdv app init` → `sdv package publish`: the folder it writes is built (kuksa-client and its
dependencies bundled as wheels), signed and stored by the real packager, and the packaged
main.py reads Vehicle.Speed through the signal library the packager generated."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from typer.testing import CliRunner

from sdv_client.cli import app as sdv
from sdv_client.packages import PackagerClient
from sdv_events.package_format import verify_artifact
from sdv_events.service import wait_until_ready
from sdv_packager.app import serve
from sdv_packager.settings import PackagerSettings

pytestmark = pytest.mark.timeout(240)

# Runs the packaged main.watch on the generated Vehicle, over a stand-in of kuksa-client's
# VSSClient that streams two speeds: the lines it prints are the app's console.
DRIVE = """
import asyncio, types
import main, vehicle_signals

class Client:
    async def subscribe_current_values(self, paths):
        for speed in (42.0, 131.0):
            yield {path: types.SimpleNamespace(value=speed) for path in paths}

asyncio.run(main.watch(vehicle_signals.Vehicle(Client()), 130.0))
"""


@pytest.fixture(scope="module")
def kuksa_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kuksa-client and its dependencies as wheels: the packager bundles them offline."""
    where = tmp_path_factory.mktemp("wheelhouse")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--dest", str(where), "--python-version", "3.11", "--implementation", "cp",
         "--platform", "manylinux2014_x86_64", "--platform", "any", "kuksa-client>=0.4"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"kuksa-client wheels cannot be fetched here (no package index): {result.stderr[-300:]}")
    return where


@pytest.fixture
async def packager(fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path,
                   kuksa_wheelhouse: Path) -> AsyncIterator[tuple[str, PackagerClient]]:
    settings = PackagerSettings(
        nats_url=fresh_nats_url, database_url=database_url, schema_name=schema,
        signing_key_path=tmp_path / "keys" / "packager.pem", wheelhouse=kuksa_wheelhouse,
        wheels_offline=True, wheel_platforms=["x86_64"], log_level="WARNING",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    nc = await nats.connect(fresh_nats_url)
    await wait_until_ready(nc, "packager", task=task)
    yield fresh_nats_url, PackagerClient(nc, actor="test")
    stop.set()
    await asyncio.wait_for(task, 20)
    await nc.drain()


async def cli(url: str, *args: str) -> Any:
    result = await asyncio.to_thread(CliRunner().invoke, sdv, [*args, "--json"],
                                     env={"SDV_NATS_URL": url, "SDV_NATS_CREDS": "", "SDV_NATS_CA": ""})
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


async def python_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [sys.executable, *args], cwd=folder,
                                   capture_output=True, text=True, timeout=60)


async def test_an_initialised_app_publishes_signed_and_reads_speed_through_the_generated_library(
    packager: tuple[str, PackagerClient], tmp_path: Path,
) -> None:
    url, client = packager
    folder = tmp_path / "speed-demo"
    await cli(url, "app", "init", "speed-demo", "--dir", str(folder))

    info = (await cli(url, "package", "publish", str(folder)))["package"]
    assert (info["name"], info["version"], info["channel"]) == ("speed-demo", "0.1.0", "dev")
    assert any(w.startswith("kuksa_client-") for w in info["bundled_wheels"])

    view = await client.get("speed-demo", "0.1.0")
    key = await client.signing_key()
    manifest, members = verify_artifact(await client.download(view.info), digest=view.info.digest,
                                        signature_b64=view.info.signature, public_key_b64=key.public_key_b64)
    assert manifest.vss_reads == ["Vehicle.Speed"]
    assert {"main.py", "test_main.py", "sdv-app.toml", "vehicle_signals.py"} <= set(members)
    assert "self.speed: Signal[float]" in members["vehicle_signals.py"].decode()

    unpacked = tmp_path / "unpacked"
    for name in ("main.py", "test_main.py", "vehicle_signals.py"):
        (unpacked / name).parent.mkdir(parents=True, exist_ok=True)
        (unpacked / name).write_bytes(members[name])
    driven = await python_in(unpacked, "-c", DRIVE)
    assert driven.returncode == 0, driven.stderr
    assert driven.stdout.splitlines() == ["Vehicle.Speed 42.0 km/h", "Vehicle.Speed 131.0 km/h (over the limit)"]
    shipped_test = await python_in(unpacked, "-m", "unittest")
    assert shipped_test.returncode == 0, shipped_test.stderr
