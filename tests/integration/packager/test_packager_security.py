"""Attacks on the packager (issue 11), each performed against a real packager service on real
NATS and PostgreSQL, each asserting that it fails: publishing an app never runs a dependency's
code, pip never runs with access to the signing key, a decompression bomb is refused before it
fills the disk, and publish never deletes a release."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest

from sdv_client.packages import PackagerClient
from sdv_events.bus import InvalidRequest
from sdv_events.package_format import verify_artifact
from sdv_events.provisioning import UPLOADS_BUCKET
from sdv_events.schemas.packages import PackageInfo, PublishRequest
from sdv_events.service import wait_until_ready
from sdv_packager.app import serve
from sdv_packager.build.sources import MAX_APP_BYTES
from sdv_packager.settings import PackagerSettings

MB = 1024 * 1024
APP = """\
[app]
name = "door-watch"
version = "1.0.0"
entry_point = "main.py"
dependencies = {dependencies}
"""

Start = Callable[..., AbstractAsyncContextManager[PackagerClient]]


@pytest.fixture
def shared_dir() -> Any:
    """A directory every user may write to and read: what the build user reaches (pytest's
    tmp_path is root-only, so it would hide whether the sandbox or the path protected a file)."""
    path = Path(tempfile.mkdtemp(prefix="sdv-sec-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_packager(fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path) -> Start:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[PackagerClient]:
        settings = PackagerSettings(**{
            "service": "packager", "nats_url": fresh_nats_url, "database_url": database_url,
            "schema_name": schema, "signing_key_path": tmp_path / "keys" / "packager.pem",
            "wheels_offline": True, "log_level": "WARNING", **overrides,
        })
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop))
        nc = await nats.connect(fresh_nats_url)
        try:
            await wait_until_ready(nc, "packager", task=task)
            yield PackagerClient(nc, actor="attacker")
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            await nc.drain()

    return start


def make_app(root: Path, dependencies: list[str]) -> Path:
    app = root / "app"
    app.mkdir()
    deps = "[" + ", ".join(f"'{d}'" for d in dependencies) + "]"
    (app / "sdv-app.toml").write_text(APP.format(dependencies=deps))
    (app / "main.py").write_text("print('hello')\n")
    return app


def evil_sdist(where: Path, marker: Path) -> Path:
    """An sdist whose build runs code offline (an in-tree PEP 517 backend, no build requirements)
    and whose setup.py would too: either writes `marker`. Plain `pip download --only-binary=:all:`
    of a direct reference to it *does* write the marker."""
    payload = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran as ' + __name__)\n"
    files = {
        "evil-1.0/pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "evilbackend"\n'
                                   'backend-path = ["."]\n',
        "evil-1.0/evilbackend.py": payload + "def get_requires_for_build_wheel(config_settings=None):\n"
                                   "    return []\n",
        "evil-1.0/setup.py": payload,
        "evil-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
    }
    path = where / "evil-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    path.chmod(0o644)
    return path


def wheel(where: Path, name: str, requires: list[str]) -> Path:
    path = where / f"{name}-1.0-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{name}/__init__.py", "")
        whl.writestr(f"{name}-1.0.dist-info/METADATA", meta)
        whl.writestr(f"{name}-1.0.dist-info/WHEEL",
                     "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{name}-1.0.dist-info/RECORD", "")
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("scheme", ["file", "https", "git+https"])
async def test_direct_reference_dependency_is_refused_and_nothing_runs(
    start_packager: Start, shared_dir: Path, tmp_path: Path, scheme: str
) -> None:
    marker = shared_dir / "MARKER"
    sdist = evil_sdist(shared_dir, marker)
    url = {"file": sdist.as_uri(), "https": "https://evil.example/evil-1.0.tar.gz",
           "git+https": "git+https://evil.example/evil.git"}[scheme]
    line = f"evil @ {url}"
    async with start_packager() as client:
        with pytest.raises(InvalidRequest) as refused:
            await client.publish_dir(make_app(tmp_path, ["requests>=2", line]))
    problem = refused.value.details["sdv-app.toml: app.dependencies"]
    assert f"dependency [1] {line!r} is a direct reference" in problem
    assert "[0]" not in problem  # the valid line is not blamed
    assert not marker.exists()


@pytest.mark.parametrize("line", ["-e .", "--index-url=https://evil.example/simple", "-r more.txt",
                                  "--find-links /tmp", "--extra-index-url https://evil.example",
                                  "--trusted-host evil.example", "./vendored/evil", "https://e.example/e.whl"])
async def test_pip_option_and_path_dependency_lines_are_refused(
    start_packager: Start, tmp_path: Path, line: str
) -> None:
    async with start_packager() as client:
        with pytest.raises(InvalidRequest) as refused:
            await client.publish_dir(make_app(tmp_path, [line]))
    assert f"dependency [0] {line!r}" in refused.value.details["sdv-app.toml: app.dependencies"]


async def test_sdist_only_dependency_is_refused_and_its_setup_never_runs(
    start_packager: Start, shared_dir: Path, tmp_path: Path
) -> None:
    marker = shared_dir / "MARKER"
    wheelhouse = shared_dir / "wheelhouse"
    wheelhouse.mkdir(mode=0o755)
    evil_sdist(wheelhouse, marker)
    async with start_packager(wheelhouse=wheelhouse) as client:
        with pytest.raises(InvalidRequest) as refused:
            await client.publish_dir(make_app(tmp_path, ["evil==1.0"]))
    assert "No matching distribution found for evil==1.0" in str(refused.value)
    assert not marker.exists()


async def test_wheel_depending_on_a_direct_reference_is_refused_and_nothing_builds(
    start_packager: Start, shared_dir: Path, tmp_path: Path
) -> None:
    """The reference hides in a wheel's metadata, where the manifest check cannot see it: pip
    would build it; the guarded pip refuses every distribution that is not a wheel."""
    marker = shared_dir / "MARKER"
    sdist = evil_sdist(shared_dir, marker)
    wheelhouse = shared_dir / "wheelhouse"
    wheelhouse.mkdir(mode=0o755)
    wheel(wheelhouse, "innocent", [f"evil @ {sdist.as_uri()}"])
    async with start_packager(wheelhouse=wheelhouse) as client:
        with pytest.raises(InvalidRequest) as refused:
            await client.publish_dir(make_app(tmp_path, ["innocent==1.0"]))
    assert "is not a wheel; the packager never builds" in str(refused.value)
    assert not marker.exists()


async def test_wheels_from_the_wheelhouse_are_still_bundled(
    start_packager: Start, shared_dir: Path, tmp_path: Path
) -> None:
    wheelhouse = shared_dir / "wheelhouse"
    wheelhouse.mkdir(mode=0o700)  # the build user cannot read it: the packager stages the wheels
    wheel(wheelhouse, "helper", [])
    async with start_packager(wheelhouse=wheelhouse) as client:
        info = await client.publish_dir(make_app(tmp_path, ["helper==1.0"]))
    assert info.bundled_wheels == ["helper-1.0-py3-none-any.whl"]


def spy_pip(shared_dir: Path, key: Path) -> list[str]:
    """A stand-in for pip that records who it runs as and what it can reach, then fails."""
    report = shared_dir / "report"
    report.mkdir(mode=0o777)
    report.chmod(0o777)
    script = shared_dir / "pip.sh"
    script.write_text(
        f"r={report}\nid -u > $r/uid\nid -G > $r/groups\nenv > $r/env\npwd > $r/cwd\n"
        f"cat {key} > $r/key 2>/dev/null; echo $? > $r/key_rc\nexit 3\n"
    )
    script.chmod(0o755)
    return ["/bin/sh", str(script)]


async def spied_publish(start_packager: Start, shared_dir: Path, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("SDV_PROBE_SECRET", "must-not-reach-pip")
    keys = shared_dir / "keys"
    keys.mkdir(mode=0o755)  # only the key's own 0600 mode protects it
    key = keys / "packager-ed25519.pem"
    async with start_packager(signing_key_path=key, pip_command=spy_pip(shared_dir, key)) as client:
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        with pytest.raises(InvalidRequest, match="cannot resolve wheels"):
            await client.publish_dir(make_app(tmp_path, ["requests>=2"]))
    return {p.name: p.read_text().strip() for p in (shared_dir / "report").iterdir()}


@pytest.mark.skipif(os.geteuid() != 0, reason="the packager switches pip to another user only as root")
async def test_pip_runs_without_access_to_the_signing_key(
    start_packager: Start, shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = await spied_publish(start_packager, shared_dir, tmp_path, monkeypatch)
    assert int(seen["uid"]) != 0
    assert "0" not in seen["groups"].split()
    assert seen["key_rc"] != "0"
    assert seen["key"] == ""


async def test_pip_runs_with_a_scrubbed_environment_in_its_own_directories(
    start_packager: Start, shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = await spied_publish(start_packager, shared_dir, tmp_path, monkeypatch)
    env = dict(line.split("=", 1) for line in seen["env"].splitlines() if "=" in line)
    assert "SDV_PROBE_SECRET" not in env
    assert not any(k.startswith(("SDV_", "PIP_")) for k in env)
    sandbox = Path(seen["cwd"]).parent
    assert Path(seen["cwd"]) == sandbox / "work"
    assert env["HOME"] == str(sandbox / "home")
    assert env["TMPDIR"] == str(sandbox / "tmp")
    assert not sandbox.exists()  # removed after the build


def bomb(files: int, size: int) -> bytes:
    """A tar.gz of `files` members of `size` zero bytes: tiny compressed, huge extracted."""
    raw = io.BytesIO()
    chunk = bytes(size)
    with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=9) as tar:
        for index in range(files):
            info = tarfile.TarInfo(f"app/blob-{index:04}.bin")
            info.size = size
            tar.addfile(info, io.BytesIO(chunk))
    return raw.getvalue()


async def test_decompression_bomb_upload_is_refused_before_it_fills_the_disk(
    start_packager: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bomb(300, MB)
    assert len(data) < 400_000  # ~300 KB that unpacks to 300 MB
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the packager unpacks uploads
    peak = 0
    done = asyncio.Event()

    async def watch_disk() -> None:
        nonlocal peak
        while not done.is_set():
            used = sum(p.stat().st_size for p in scratch.rglob("*") if p.is_file())
            peak = max(peak, used)
            await asyncio.sleep(0.005)

    async with start_packager() as client:
        bucket = await client.nc.jetstream().object_store(UPLOADS_BUCKET)
        await bucket.put("uploads/bomb.tar.gz", data)
        watcher = asyncio.create_task(watch_disk())
        try:
            with pytest.raises(InvalidRequest, match=f"unpacks to more than {MAX_APP_BYTES // MB} MB"):
                await client.commands.call("packager", "publish", PublishRequest("uploads/bomb.tar.gz"),
                                           PackageInfo)
        finally:
            done.set()
            await watcher
    assert peak <= MAX_APP_BYTES
    assert list(scratch.iterdir()) == []


async def test_publish_never_deletes_a_release(start_packager: Start, tmp_path: Path) -> None:
    async with start_packager() as client:
        info = await client.publish_dir(make_app(tmp_path, []))
        for name in (info.object_name, info.digest):
            with pytest.raises(InvalidRequest, match="is not an upload"):
                await client.commands.call("packager", "publish", PublishRequest(name), PackageInfo)
        artifact = await client.download(info)
        key = await client.signing_key()
    verify_artifact(artifact, digest=info.digest, signature_b64=info.signature,
                    public_key_b64=key.public_key_b64)
