"""The dashboard's change feed (`/ui/changes`) speaks once the read model has the change: a page
that fetches its live part on a notice finds what the notice was about, however busy the
machine. The bus's own stream (`/api/stream`) still carries each event once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from sdv_events.schemas.agent import AppFailed

pytestmark = pytest.mark.timeout(90)
APP = "notice-app"


async def sse(http: httpx.AsyncClient, path: str, connected: asyncio.Event) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of a server-sent event stream, as they come."""
    async with http.stream("GET", path, timeout=httpx.Timeout(10.0, read=None)) as response:
        assert response.status_code == 200, path
        connected.set()
        event, data = "message", ""
        async for line in response.aiter_lines():
            if not line:
                if data:
                    yield event, data
                event, data = "message", ""
            elif line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data = line.partition(":")[2].strip()


async def app_state(monitor: Any, device_id: str) -> str | None:
    doc = await monitor.get(f"/api/devices/{device_id}")
    return next((a["state"] for a in doc["apps"] if a["app"] == APP), None)


async def test_a_change_notice_comes_once_the_views_show_the_change_and_the_stream_has_it_once(
        suite: Any, monitor: Any) -> None:
    (agent,) = await suite.add_agents(1)
    device = agent.device_id
    v1 = await suite.publish(APP, "1.0.0")
    done = await suite.create(v1, device_ids=[device], kind="all-at-once")
    await suite.wait_status(done.rollout_id, "completed")

    async def running() -> bool:
        return await app_state(monitor, device) == "RUNNING"

    await monitor.until(running, 20.0, "the monitor shows the app running")

    # A page of the device follows its notices, and a client the bus's events of the device.
    seen_on_notice: list[tuple[str, str | None]] = []
    stream_types: list[str] = []
    notices_on, stream_on = asyncio.Event(), asyncio.Event()

    async def page() -> None:
        async for event, data in sse(monitor.http, f"/ui/changes?device={device}", notices_on):
            assert event == "changed"
            # What the page does on a notice: fetch its live part at once.
            seen_on_notice.append((data, await app_state(monitor, device)))
            if data == "AppFailed":
                return

    async def client() -> None:
        async for event, data in sse(monitor.http, f"/api/stream?device={device}", stream_on):
            if event == "AppFailed":
                assert json.loads(data)["stream_id"] == f"agent-{device}"  # the device's own fact
            stream_types.append(event)

    reader, follower = asyncio.create_task(page()), asyncio.create_task(client())
    try:
        await asyncio.wait_for(asyncio.gather(notices_on.wait(), stream_on.wait()), 10)
        await agent.publish(AppFailed(device_id=device, app=APP, version="1.0.0", digest=v1.digest,
                                      desired_revision=999, reason="exit code 3", stage="run"))
        await asyncio.wait_for(reader, 30)
        # The fact is recorded, its record applied and committed before the page hears of it.
        assert seen_on_notice[-1] == ("AppFailed", "FAILED"), seen_on_notice
        await asyncio.sleep(1.0)  # anything else the stream would send about it
    finally:
        follower.cancel()
        reader.cancel()
    # The stream has the device's fact once (the monitor's record of it is not a second copy).
    assert stream_types.count("AppFailed") == 1, stream_types
    assert "DeviceFactRecorded" not in stream_types


async def test_the_change_feed_survives_its_listening_connection_being_killed(
        database_url: str, schema: str) -> None:
    from sdv_monitor.adapters.live import Filter
    from sdv_monitor.adapters.view_changes import ViewChanges
    from sdv_monitor.projections.notices import channel

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    changes = ViewChanges(pool, schema, retry_max_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(changes.run(stop))
    heard: list[str] = []

    async def page() -> None:
        async for event in changes.follow(Filter(device="d1"), None):
            assert not isinstance(event, str)
            heard.append(event.type)

    async def until(what: str, check: Any) -> None:
        for _ in range(200):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{what}: heard {heard}")

    follower = asyncio.create_task(page())
    try:
        await until("listening", lambda: changes.listening and heard)
        heard.clear()
        notify = "SELECT pg_notify($1, $2)"
        await pool.execute(notify, channel(schema), '[["facts", null, "d2", "AppHealthy"]]')
        await pool.execute(notify, channel(schema), '[["facts", "r-1", "d1", "AppFailed"]]')
        await until("the page's device", lambda: heard == ["AppFailed"])  # d2 is not its device

        # The listening connection is killed: health says so, the listener comes back, and the
        # page is told anything may have changed (what was committed meanwhile had no notice).
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query = 'LISTEN \"' || $1 || '\"' AND pid <> pg_backend_pid()", channel(schema))
        assert killed >= 1
        await until("told after the listener came back", lambda: "listening" in heard)
        assert (await changes.status()).healthy
        await pool.execute(notify, channel(schema), '[["device", null, "d1", "DeviceCameOnline"]]')
        await until("heard again", lambda: heard[-1] == "DeviceCameOnline")
    finally:
        stop.set()
        follower.cancel()
        await asyncio.wait_for(task, 10)
        await pool.close()
