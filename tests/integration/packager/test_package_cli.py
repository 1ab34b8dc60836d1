"""`sdv package …` against the packager service in-process on real NATS and PostgreSQL.

The CLI runs with typer's CliRunner in a worker thread (it calls `asyncio.run` itself, the
service runs on the test's loop), and once as a real subprocess (`python -m sdv_client.package_cli`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from sdv_client.cli_support import EXIT_REFUSED, EXIT_UNREACHABLE
from sdv_client.package_cli import EXIT_VERIFY, app
from sdv_client.packages import PackagerClient
from sdv_events.package_format import verify_artifact
from sdv_events.service import wait_until_ready
from sdv_packager.app import serve
from sdv_packager.settings import PackagerSettings

pytestmark = pytest.mark.timeout(60)

APP = """\
[app]
name = "{name}"
version = "{version}"
description = "CLI test app"
entry_point = "main.py"

[vss]
reads = ["Vehicle.Speed"]
writes = {writes}
"""


def make_app(root: Path, name: str = "cli-watch", version: str = "1.0.0",
             body: str = "print('hello')\n", writes: str = '["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"]'
             ) -> Path:
    app_dir = root / f"{name}-{version}-{abs(hash((body, writes))) % 10**8}"
    app_dir.mkdir(parents=True)
    (app_dir / "sdv-app.toml").write_text(APP.format(name=name, version=version, writes=writes))
    (app_dir / "main.py").write_text(body)
    return app_dir


@pytest.fixture
async def packager(fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path
                   ) -> AsyncIterator[tuple[str, PackagerClient]]:
    settings = PackagerSettings(
        service="packager", nats_url=fresh_nats_url, database_url=database_url, schema_name=schema,
        signing_key_path=tmp_path / "keys" / "packager.pem", wheels_offline=True, log_level="WARNING",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    nc = await nats.connect(fresh_nats_url)
    await wait_until_ready(nc, "packager", task=task)
    yield fresh_nats_url, PackagerClient(nc, actor="test")
    stop.set()
    await asyncio.wait_for(task, 20)
    await nc.drain()


async def sdv(url: str, *args: str) -> Result:
    """`sdv package <args>` with SDV_NATS_URL=url, off the event loop."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, app, list(args), env={"SDV_NATS_URL": url, "COLUMNS": "200"}
    )


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


async def eventually_listed(url: str, *args: str, expect: list[tuple[str, str, bool]],
                            timeout: float = 10.0) -> list[dict[str, Any]]:
    """`list --json` until (version, channel, yanked) match: the catalog is a projection."""
    deadline = time.monotonic() + timeout
    while True:
        result = await sdv(url, "list", "--json", *args)
        assert result.exit_code == 0, result.stdout + result.stderr
        packages = as_json(result)["packages"]
        got = [(p["info"]["version"], p["channel"], p["yanked"]) for p in packages]
        if got == expect or time.monotonic() > deadline:
            assert got == expect
            return packages  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)


async def test_publish_list_promote_yank_get_and_download_verified(packager, tmp_path) -> None:
    url, client = packager
    first = await sdv(url, "publish", str(make_app(tmp_path, version="1.0.0")), "--json")
    assert first.exit_code == 0, first.stdout + first.stderr
    doc = as_json(first)
    assert doc["ok"] is True
    info = doc["package"]
    assert (info["name"], info["version"], info["channel"]) == ("cli-watch", "1.0.0", "dev")
    assert len(info["digest"]) == 64
    assert info["size"] > 0

    # Human output names what an operator needs to see.
    second = await sdv(url, "publish", str(make_app(tmp_path, version="1.1.0")))
    assert second.exit_code == 0, second.stdout + second.stderr
    for text in ("cli-watch", "1.1.0", "sha256:", "size", "channel", "dev"):
        assert text in second.stdout

    await eventually_listed(url, "--name", "cli-watch",
                            expect=[("1.0.0", "dev", False), ("1.1.0", "dev", False)])

    promoted = await sdv(url, "promote", "cli-watch", "1.1.0", "stable", "--json")
    assert promoted.exit_code == 0, promoted.stdout + promoted.stderr
    assert as_json(promoted)["package"]["channel"] == "stable"

    yanked = await sdv(url, "yank", "cli-watch", "1.0.0", "--reason", "crashes on start", "--json")
    assert yanked.exit_code == 0, yanked.stdout + yanked.stderr
    view = as_json(yanked)["package"]
    assert view["yanked"] is True
    assert view["yank_reason"] == "crashes on start"

    await eventually_listed(url, "--name", "cli-watch",
                            expect=[("1.0.0", "dev", True), ("1.1.0", "stable", False)])
    await eventually_listed(url, "--channel", "stable", expect=[("1.1.0", "stable", False)])
    await eventually_listed(url, "--no-yanked", expect=[("1.1.0", "stable", False)])
    table = await sdv(url, "list")
    assert table.exit_code == 0
    assert "crashes on start" in table.stdout
    assert "1.1.0" in table.stdout

    got = await sdv(url, "get", "cli-watch", "1.1.0", "--json")
    assert got.exit_code == 0, got.stdout + got.stderr
    pkg = as_json(got)["package"]["info"]
    assert as_json(got)["package"]["channel"] == "stable"
    human = await sdv(url, "get", "cli-watch", "1.1.0")
    assert human.exit_code == 0
    assert pkg["digest"] in human.stdout

    out = tmp_path / "dl" / "cli-watch-1.1.0.tar.gz"
    downloaded = await sdv(url, "download", "cli-watch", "1.1.0", "-o", str(out), "--json")
    assert downloaded.exit_code == 0, downloaded.stdout + downloaded.stderr
    doc = as_json(downloaded)
    assert doc["verified"] is True
    assert doc["file"] == str(out)
    data = out.read_bytes()
    key = await client.signing_key()
    manifest, members = verify_artifact(data, digest=pkg["digest"], signature_b64=pkg["signature"],
                                        public_key_b64=key.public_key_b64)
    assert (manifest.name, manifest.version) == ("cli-watch", "1.1.0")
    assert {"main.py", "sdv-app.toml", "vehicle_signals.py"} <= members.keys()
    with tarfile.open(out) as tar:  # an ordinary tar.gz for any tool
        assert "main.py" in tar.getnames()

    # A yanked version still downloads (audit), with a warning.
    old = await sdv(url, "download", "cli-watch", "1.0.0", "-o", str(tmp_path / "old.tar.gz"))
    assert old.exit_code == 0
    assert "yanked" in old.stderr


async def test_invalid_app_exits_non_zero_and_names_every_problem(packager, tmp_path) -> None:
    url, _ = packager
    bad = make_app(tmp_path, body="def broken(:\n", writes='["Vehicle.Speed"]')
    result = await sdv(url, "publish", str(bad), "--json")
    assert result.exit_code == EXIT_REFUSED
    doc = as_json(result)
    assert doc["ok"] is False
    assert doc["code"] == "invalid_request"
    assert "syntax error" in doc["details"][f"{bad}/main.py:1"]
    assert any("Vehicle.Speed" in where or "Vehicle.Speed" in message
               for where, message in doc["details"].items())

    human = await sdv(url, "publish", str(bad))
    assert human.exit_code == EXIT_REFUSED
    assert "main.py:1" in human.stderr
    assert "syntax error" in human.stderr
    assert human.stdout == ""

    missing = await sdv(url, "get", "cli-watch", "1.0.0", "--json")
    assert missing.exit_code == EXIT_REFUSED
    assert as_json(missing)["code"] == "not_found"


async def test_publish_errors_name_the_folder_the_user_passed_not_a_temporary_one(
    packager, tmp_path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = packager
    monkeypatch.chdir(tmp_path)
    broken = make_app(tmp_path, name="cli-broken", body="x = 1\ndef broken(:\n",
                      writes='["Vehicle.Speed"]').relative_to(tmp_path)
    refused = await sdv(url, "publish", str(broken), "--json")
    assert refused.exit_code == EXIT_REFUSED
    doc = as_json(refused)
    assert doc["error"].startswith(f"{broken}: ")
    assert set(doc["details"]) == {f"{broken}/main.py:2", f"{broken}/sdv-app.toml: vss.writes"}
    assert "sdv-upload-" not in refused.stdout  # the packager's unpacking directory stays its own

    human = await sdv(url, "publish", str(broken))
    assert f"{broken}/main.py:2" in human.stderr
    assert "sdv-upload-" not in human.stderr

    (tmp_path / "empty").mkdir()
    no_manifest = await sdv(url, "publish", "empty", "--json")
    assert no_manifest.exit_code == 2
    assert as_json(no_manifest)["error"].startswith("empty: no sdv-app.toml in this folder")


async def test_service_errors_are_typed_and_exit_non_zero(packager, tmp_path) -> None:
    url, _ = packager
    assert (await sdv(url, "publish", str(make_app(tmp_path)), "--json")).exit_code == 0
    # Same name and version, different content: refused (409-style).
    changed = await sdv(url, "publish", str(make_app(tmp_path / "b", body="print('changed')\n")), "--json")
    assert changed.exit_code == EXIT_REFUSED
    assert as_json(changed)["code"] == "conflict"
    # Same content again: idempotent.
    again = await sdv(url, "publish", str(make_app(tmp_path / "c")), "--json")
    assert again.exit_code == 0
    assert (await sdv(url, "yank", "cli-watch", "1.0.0", "--reason", "bad")).exit_code == 0
    promote = await sdv(url, "promote", "cli-watch", "1.0.0", "beta")
    assert promote.exit_code == EXIT_REFUSED
    assert "rejected" in promote.stderr
    unknown = await sdv(url, "yank", "nothing", "1.0.0", "--reason", "x")
    assert unknown.exit_code == EXIT_REFUSED
    assert "not_found" in unknown.stderr
    usage = await sdv(url, "promote", "cli-watch", "1.0.0", "production")
    assert usage.exit_code == 2


async def test_download_refuses_a_package_that_does_not_verify(packager, tmp_path) -> None:
    url, _ = packager
    assert (await sdv(url, "publish", str(make_app(tmp_path)), "--json")).exit_code == 0
    other = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    out = tmp_path / "pinned.tar.gz"
    result = await sdv(url, "download", "cli-watch", "1.0.0", "-o", str(out), "--public-key", other,
                       "--json")
    assert result.exit_code == EXIT_VERIFY
    doc = as_json(result)
    assert doc["code"] == "verification_failed"
    assert "signature" in doc["error"]
    assert not out.exists()
    assert not list(tmp_path.glob(".pinned.tar.gz.*"))


async def test_unreachable_nats_exits_3_with_a_json_error() -> None:
    # A bound but never listening socket: connections are refused, and no other test's server
    # can take the port meanwhile (a merely free port could be).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        result = await sdv(f"nats://127.0.0.1:{port}", "list", "--json")
    assert result.exit_code == EXIT_UNREACHABLE
    doc = as_json(result)
    assert doc["ok"] is False
    assert doc["code"] == "unreachable"
    assert "cannot reach NATS" in doc["error"]


async def test_the_module_entry_point_publishes_in_a_subprocess(packager, tmp_path) -> None:
    url, _ = packager
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sdv_client.package_cli", "publish", str(make_app(tmp_path)), "--json",
        env={**os.environ, "SDV_NATS_URL": url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert json.loads(stdout)["package"]["name"] == "cli-watch"


async def test_sdv_package_is_a_subcommand_of_the_sdv_cli(packager, tmp_path) -> None:
    from sdv_client.cli import app as sdv_app

    url, _ = packager
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, sdv_app, ["package", "publish", str(make_app(tmp_path)), "--json"],
        env={"SDV_NATS_URL": url},
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert as_json(result)["package"]["version"] == "1.0.0"
