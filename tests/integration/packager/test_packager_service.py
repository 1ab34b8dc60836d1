"""The packager service on real NATS (object store, request/reply) and real PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from sdv_client.packages import PackagerClient
from sdv_events.bus import Conflict, InvalidRequest, NotFound, Rejected
from sdv_events.package_format import verify_artifact
from sdv_events.processing import ConsumerRunner
from sdv_events.service import wait_until_ready
from sdv_events.store import EventStore
from sdv_packager.app import serve
from sdv_packager.projections import PackageCatalog
from sdv_packager.settings import PackagerSettings

EXAMPLES = Path(__file__).parents[3] / "examples" / "apps"
APP = """\
[app]
name = "door-watch"
version = "{version}"
entry_point = "main.py"

[vss]
reads = ["Vehicle.Speed"]
writes = ["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"]
"""


def make_app(root: Path, version: str = "1.0.0", body: str = "print('hello')\n") -> Path:
    app = root / f"door-watch-{version}-{abs(hash(body))}"
    app.mkdir(parents=True)
    (app / "sdv-app.toml").write_text(APP.format(version=version))
    (app / "main.py").write_text(body)
    return app


async def eventually(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


@pytest.fixture
async def packager(
    fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path
) -> AsyncIterator[tuple[PackagerClient, PackagerSettings]]:
    settings = PackagerSettings(
        service="packager", nats_url=fresh_nats_url, database_url=database_url,
        schema_name=schema, signing_key_path=tmp_path / "keys" / "packager.pem",
        wheels_offline=True, log_level="WARNING",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    nc = await nats.connect(fresh_nats_url)
    await wait_until_ready(nc, "packager", task=task)
    yield PackagerClient(nc, actor="test"), settings
    stop.set()
    await asyncio.wait_for(task, 20)
    await nc.drain()


async def test_published_package_is_retrievable_signed_and_matches_its_manifest(packager, tmp_path) -> None:
    client, settings = packager
    info = await client.publish_dir(make_app(tmp_path))
    assert (info.name, info.version, info.channel) == ("door-watch", "1.0.0", "dev")
    artifact = await client.download(info)
    key = await client.signing_key()
    manifest, members = verify_artifact(
        artifact, digest=info.digest, signature_b64=info.signature, public_key_b64=key.public_key_b64
    )
    assert manifest.files.keys() == members.keys() >= {"main.py", "sdv-app.toml", "vehicle_signals.py"}
    assert key.key_id == info.key_id
    assert settings.signing_key_path.stat().st_mode & 0o777 == 0o600
    view = await client.get("door-watch", "1.0.0")
    assert view.info == info


async def test_same_content_is_idempotent_and_different_content_is_refused(packager, tmp_path) -> None:
    client, _ = packager
    first = await client.publish_dir(make_app(tmp_path))
    again = await client.publish_dir(make_app(tmp_path / "copy"))
    assert again.digest == first.digest
    with pytest.raises(Conflict, match="new version"):
        await client.publish_dir(make_app(tmp_path, body="print('changed')\n"))
    views = await eventually(lambda: client.list(name="door-watch"))
    assert [v.info.digest for v in views] == [first.digest]


async def test_invalid_app_gives_every_problem_and_stores_nothing(packager, tmp_path) -> None:
    client, _ = packager
    app = make_app(tmp_path, body="def broken(:\n")
    with pytest.raises(InvalidRequest) as caught:
        await client.publish_dir(app)
    assert "syntax error" in caught.value.details["main.py:1"]
    with pytest.raises(NotFound):
        await client.get("door-watch", "1.0.0")


async def test_yank_and_promote_show_in_list_and_rebuild_gives_the_same_list(
    packager, tmp_path, database_url, schema
) -> None:
    client, _ = packager
    await client.publish_dir(make_app(tmp_path, "1.0.0"))
    await client.publish_dir(make_app(tmp_path, "1.1.0"))
    await client.promote("door-watch", "1.1.0", "stable")
    yanked = await client.yank("door-watch", "1.0.0", "crashes on start")
    assert yanked.yanked
    assert yanked.yank_reason == "crashes on start"
    with pytest.raises(Rejected):
        await client.promote("door-watch", "1.0.0", "beta")

    async def settled():
        views = await client.list(name="door-watch")
        return views if [(v.info.version, v.channel, v.yanked) for v in views] == [
            ("1.0.0", "dev", True), ("1.1.0", "stable", False)] else None

    before = await eventually(settled)
    assert before, await client.list(name="door-watch")
    assert [v.info.version for v in await client.list(channel="stable")] == ["1.1.0"]
    assert [v.info.version for v in await client.list(include_yanked=False)] == ["1.1.0"]

    store_pool = __import__("asyncpg")
    pool = await store_pool.create_pool(database_url, min_size=1, max_size=2)
    js = client.nc.jetstream()
    read_model = PackageCatalog(schema)
    # The service's runner leads its projection (advisory lock); rebuild the same projection
    # from the service's event store into a schema of its own instead, then compare.
    copy = f"{schema}_copy"
    await pool.execute(f"CREATE SCHEMA {copy}")
    rebuilt = PackageCatalog(copy)
    runner = ConsumerRunner(pool, copy, js, rebuilt)
    store = EventStore(pool, schema)
    await asyncio.wait_for(runner.rebuild("store", store=store), 20)
    after = await rebuilt.view.find(pool, "door-watch", None, True)
    assert after == before == await read_model.view.find(pool, "door-watch", None, True)
    await pool.execute(f"DROP SCHEMA {copy} CASCADE")
    await pool.close()


async def test_unknown_version_and_unknown_upload_are_not_found(packager) -> None:
    client, _ = packager
    with pytest.raises(NotFound):
        await client.yank("nothing", "1.0.0", "x")
    from sdv_events.schemas.packages import PackageInfo, PublishRequest

    with pytest.raises(NotFound, match="no upload"):
        await client.commands.call("packager", "publish", PublishRequest("uploads/missing"), PackageInfo)


async def test_example_apps_build_with_bundled_wheels(fresh_nats_url, database_url, schema, tmp_path) -> None:
    """The shipped examples, with kuksa-client and its dependencies as wheels (from PyPI)."""
    settings = PackagerSettings(
        service="packager", nats_url=fresh_nats_url, database_url=database_url, schema_name=schema,
        signing_key_path=tmp_path / "k.pem", log_level="WARNING",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    nc = await nats.connect(fresh_nats_url)
    client = PackagerClient(nc)
    try:
        await wait_until_ready(nc, "packager", task=task)
        for name in ("speed-monitor", "seat-adjuster"):
            app = tmp_path / name
            shutil.copytree(EXAMPLES / name, app)
            info = await client.publish_dir(app)
            assert info.name == name
            assert any(w.startswith("kuksa_client-") for w in info.bundled_wheels)
            assert any(w.startswith("grpcio-") for w in info.bundled_wheels)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await nc.drain()
