"""Locked, reproducible, multi-architecture packages through the real packager service (issue 16):

- a pinned requirements.txt (the Velocitas example's, 28 pins, grpcio and aiohttp among them)
  gives the same artifact twice, and that package carries x86_64 and aarch64 wheels, each set
  recorded as a target the agent installs exactly;
- an unpinned app records what it resolved in the signed manifest, and a rebuild of that
  version resolves to the same even after the index moved on (idempotent, not a conflict),
  while a new version takes the newer release.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import shutil
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from sdv_client.packages import PackagerClient
from sdv_events.package_format import read_artifact
from sdv_events.service import wait_until_ready
from sdv_packager.app import serve
from sdv_packager.settings import PackagerSettings

pytestmark = pytest.mark.timeout(300)
vehicle = sys.modules["sdv_vehicle_test_support"]


def pure_wheel(where: Path, name: str, version: str) -> None:
    """A minimal pure-Python wheel, made by hand (a release on a package index of our own)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: sdv-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(where / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, data in [*files.items(), (f"{dist}/RECORD", record.encode())]:
            whl.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), data)


@contextlib.asynccontextmanager
async def packager_on(url: str, database_url: str, schema: str, tmp_path: Path,
                      wheelhouse: Path) -> AsyncIterator[PackagerClient]:
    settings = PackagerSettings(
        nats_url=url, database_url=database_url, schema_name=schema,
        signing_key_path=tmp_path / "keys" / "packager.pem", wheelhouse=wheelhouse,
        wheels_offline=True, log_level="WARNING",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    nc = await nats.connect(url)
    await wait_until_ready(nc, "packager", task=task)
    try:
        yield PackagerClient(nc, actor="test")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await nc.drain()


async def test_a_pinned_requirements_txt_gives_the_same_multi_arch_artifact_twice(
    fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path,
) -> None:
    wheelhouse = await asyncio.to_thread(vehicle.velocitas_wheelhouse)
    one, two = tmp_path / "one" / "speed", tmp_path / "two" / "speed"
    shutil.copytree(vehicle.VELOCITAS_APP, one)
    shutil.copytree(vehicle.VELOCITAS_APP, two)
    async with packager_on(fresh_nats_url, database_url, schema, tmp_path, wheelhouse) as client:
        first = await client.publish_dir(one, version="1.0.0")
        second = await client.publish_dir(two, version="1.0.0")  # another folder, another upload
        assert second.digest == first.digest  # the same bytes: republishing is a no-op
        assert first.platforms == ["3.11/aarch64", "3.11/x86_64"]
        manifest, _, members = read_artifact(await client.download(first))
    pins = (vehicle.VELOCITAS_APP / "app" / "requirements.txt").read_text().split()
    assert sorted(manifest.resolved) == sorted(p for p in pins if "==" in p)  # the pins, exactly
    targets = {t.arch: t.wheels for t in manifest.targets}
    assert set(targets) == {"x86_64", "aarch64"}
    grpc = {arch: [w for w in wheels if w.startswith("grpcio-1.64.1-")] for arch, wheels in targets.items()}
    assert "aarch64" in grpc["aarch64"][0]
    assert "x86_64" in grpc["x86_64"][0]
    # Pure wheels are carried once and listed in both targets.
    assert "velocitas_sdk-0.15.7-py3-none-any.whl" in targets["aarch64"]
    assert "velocitas_sdk-0.15.7-py3-none-any.whl" in targets["x86_64"]
    assert sorted(manifest.wheels) == sorted(set(targets["aarch64"]) | set(targets["x86_64"]))
    assert {f"wheels/{w}" for w in manifest.wheels} <= set(members)


async def test_an_unpinned_build_records_what_it_resolved_and_a_rebuild_resolves_to_it(
    fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path,
) -> None:
    index = tmp_path / "index"
    index.mkdir(mode=0o755)
    pure_wheel(index, "greet", "1.0")
    app = tmp_path / "unpinned"
    app.mkdir()
    (app / "sdv-app.toml").write_text('[app]\nname = "greeter"\nversion = "1.0.0"\nrequirements = "requirements.txt"\n')
    (app / "requirements.txt").write_text("greet  # whatever is newest\n")
    (app / "main.py").write_text("import greet\nprint(greet.VERSION)\n")
    async with packager_on(fresh_nats_url, database_url, schema, tmp_path, index) as client:
        first = await client.publish_dir(app)
        assert first.resolved == ["greet==1.0"]
        assert first.platforms == ["3.11/any"]  # pure wheels only: one target, any arch
        pure_wheel(index, "greet", "1.1")  # the index moves on
        again = await client.publish_dir(app)
        assert again.digest == first.digest  # 1.0.0 rebuilt with what it resolved then
        (app / "sdv-app.toml").write_text((app / "sdv-app.toml").read_text().replace("1.0.0", "1.0.1"))
        newer = await client.publish_dir(app)
        assert newer.resolved == ["greet==1.1"]
        manifest, _, _ = read_artifact(await client.download(newer))
        assert manifest.resolved == ["greet==1.1"]  # in the signed manifest too
