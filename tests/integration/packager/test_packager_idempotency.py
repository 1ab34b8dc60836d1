"""Command ids on the real packager: a retried publish is applied once, a reused yank id with
another reason is a Conflict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from sdv_client.packages import PackagerClient
from sdv_events.bus import Conflict
from sdv_events.schemas.packages import PackageView, YankRequest
from sdv_events.service import wait_until_ready
from sdv_events.store import EventStore
from sdv_packager.app import serve
from sdv_packager.settings import PackagerSettings

APP = """\
[app]
name = "door-watch"
version = "1.0.0"
entry_point = "main.py"
"""


def make_app(root: Path) -> Path:
    app = root / "door-watch"
    app.mkdir(parents=True)
    (app / "sdv-app.toml").write_text(APP)
    (app / "main.py").write_text("print('hello')\n")
    return app


@pytest.fixture
async def client(
    fresh_nats_url: str, database_url: str, schema: str, tmp_path: Path
) -> AsyncIterator[PackagerClient]:
    settings = PackagerSettings(
        service="packager", nats_url=fresh_nats_url, database_url=database_url,
        schema_name=schema, signing_key_path=tmp_path / "keys" / "packager.pem",
        wheels_offline=True, log_level="WARNING",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    nc = await nats.connect(fresh_nats_url)
    await wait_until_ready(nc, "packager", task=task)
    yield PackagerClient(nc, actor="test")
    stop.set()
    await asyncio.wait_for(task, 20)
    await nc.drain()


async def test_a_publish_retried_under_its_command_id_is_applied_once(
    client: PackagerClient, tmp_path: Path, database_url: str, schema: str
) -> None:
    app = make_app(tmp_path)

    first = await client.publish_dir(app, command_id="publish-1")
    again = await client.publish_dir(app, command_id="publish-1")

    assert again == first
    store = await EventStore.open(database_url, schema)
    try:
        assert [e.type for e in await store.read_stream("package-door-watch")] == [
            "packager.PackagePublished.v1"]
    finally:
        await store.close()


async def test_a_yank_command_id_reused_with_another_reason_is_a_conflict(
    client: PackagerClient, tmp_path: Path
) -> None:
    await client.publish_dir(make_app(tmp_path))
    yank = YankRequest("door-watch", "1.0.0", "broken")
    first = await client.commands.call("packager", "yank", yank, PackageView, command_id="yank-1")

    with pytest.raises(Conflict):
        await client.commands.call("packager", "yank", YankRequest("door-watch", "1.0.0", "other"),
                                   PackageView, command_id="yank-1")

    assert await client.commands.call("packager", "yank", yank, PackageView,
                                      command_id="yank-1") == first
    assert (await client.get("door-watch", "1.0.0")).yank_reason == "broken"
