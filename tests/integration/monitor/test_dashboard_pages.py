"""The monitor's web dashboard over plain HTTP, on real rollouts of simulated agents: every page
renders the fleet's data, names a device or an app chose are shown as text (never as markup),
the page runs only the package's own scripts, and an app's console is tailed from SDV_LOGS."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

import httpx
import pytest

from sdv_events.schemas.agent import AppFailed

pytestmark = pytest.mark.timeout(90)
APP = "dash-app"
HOSTILE_HW = '<script>alert("hw")</script>'
HOSTILE_REASON = "<img src=x onerror=alert(1)>"
HOSTILE_APP = "<script>alert('app')</script>"
PAGES = ("/", "/devices", "/rollouts", "/alerts?state=all")


async def page(monitor: Any, path: str, status: int = 200) -> str:
    response = await monitor.http.get(path)
    assert response.status_code == status, (path, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("text/html"), path
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp, csp
    assert "default-src 'none'" in csp, csp
    return response.text


def text_of(html: str) -> str:
    """The page's words, tags dropped and whitespace folded (for assertions on what it says)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def rollout_with_one_failure(suite: Any, monitor: Any) -> tuple[list[Any], Any]:
    agents = await suite.add_agents(4)
    v1 = await suite.publish(APP, "1.0.0")
    first = await suite.create(v1, selector="fleet=sim", kind="all-at-once")
    await suite.wait_status(first.rollout_id, "completed")
    v2 = await suite.publish(APP, "1.1.0")
    agents[3].script["1.1.0"] = "fail"
    second = await suite.create(v2, selector="fleet=sim", waves=["1", "100%"], error=0.1, device_s=15.0)
    await suite.wait_status(second.rollout_id, "rolled_back", "aborted")

    async def seen() -> bool:
        doc = await monitor.get(f"/api/rollouts/{second.rollout_id}")
        device = await monitor.get(f"/api/devices/{agents[3].device_id}")
        return doc["rollout"]["status"] == "rolled_back" and any(
            "1.1.0 failed" in h["summary"] for h in device["history"])

    await monitor.until(seen, 20.0, "the monitor saw the rollback and the failure")
    return agents, second


async def test_every_page_renders_the_fleet_its_software_and_its_rollouts(suite: Any, monitor: Any) -> None:
    agents, rollout = await rollout_with_one_failure(suite, monitor)
    failing = agents[3].device_id

    async def overview() -> str | None:
        # Versions per app (installed, running, desired, failed): after the rollback every
        # device is meant to run 1.0.0, and does once the failing one answered the rollback.
        words = text_of(await page(monitor, "/"))
        return words if f"{APP} 1.0.0 4 4 4 0" in words else None

    words = await monitor.until(overview, 15.0, "the overview shows 1.0.0 running everywhere")
    assert "Devices 4" in words
    assert "Offline (accepted) 4" in words

    devices = text_of(await page(monitor, "/devices"))
    assert all(a.device_id in devices for a in agents)
    assert "sim-0.1" in devices  # agent version

    device = await page(monitor, f"/devices/{failing}")
    words = text_of(device)
    assert "1.1.0 failed" in words  # recent history
    assert "RUNNING" in words
    assert "1.0.0" in words
    assert f'data-src="/api/devices/{failing}/apps/{APP}/console"' in device  # the console tail

    rollouts = text_of(await page(monitor, "/rollouts"))
    assert rollout.rollout_id in rollouts
    assert "rolled back" in rollouts

    html = await page(monitor, f"/rollouts/{rollout.rollout_id}")
    words = text_of(html)
    assert "at least 95 % of a wave succeeded" in words  # thresholds
    assert "more than 10 % of a wave failed" in words
    assert "15.0 s to report" in words  # device timeout
    assert "Wave 1 of 2" in words
    assert "Wave 2 of 2" in words
    # The failed device's cell: failed, or — once it confirmed the rollback — rolled back.
    assert re.search(rf'class="cell cell--(failed|rolled_back)" id="cell-{failing}"', html)
    assert "simulated failure" in html  # the failed device's reason

    audit = text_of(await page(monitor, f"/audit?rollout={rollout.rollout_id}&since=2000-01-01T00:00:00"))
    assert "orchestrator.RolloutCreated" in audit
    assert "RollbackStarted" in audit

    # Each live part renders on its own (what the page fetches on a change notice).
    for path in (*PAGES, f"/devices/{failing}", f"/rollouts/{rollout.rollout_id}"):
        sep = "&" if "?" in path else "?"
        part = await page(monitor, f"{path}{sep}part=live")
        assert "<html" not in part, path
        assert "<table" in part or "<dl" in part, path


async def test_a_scheduled_gated_rollout_shows_its_schedule_and_why_devices_wait_to_switch(
        suite: Any, monitor: Any) -> None:
    from sdv_events.schemas.scheduling import Pacing, Schedule

    agents = await suite.add_agents(2, prefix="gated")
    for agent in agents:
        agent.signals["Vehicle.Speed"] = 50.0
    v1 = await suite.publish(APP, "2.0.0")
    schedule = Schedule(windows=["daily 00:00-24:00 UTC"], pacing=Pacing(per_minute=600, max_in_flight=5),
                        gates=["Vehicle.Speed == 0"], activation_timeout_s=3600)
    rollout = await suite.create(v1, selector="fleet=sim", kind="all-at-once", schedule=schedule)

    async def deferred() -> str | None:
        response = await monitor.http.get(f"/rollouts/{rollout.rollout_id}")  # 404 until it is seen
        html = response.text
        return html if html.count('class="cell cell--deferred" id="cell-') == 2 else None

    html = await monitor.until(deferred, 20.0, "both devices shown deferred by the gate")
    words = text_of(html)
    assert "Windows daily 00:00-24:00 UTC" in words
    assert "Rate 600.0 devices/min" in words
    assert "In flight at most 5 devices" in words
    assert "Switch when Vehicle.Speed == 0" in words
    assert "Waiting to switch 0 staged · 2 deferred by a gate · 0 held" in words
    assert "(Vehicle.Speed = 50" in html or "Vehicle.Speed is 50" in html  # the value the vehicle had

    for agent in agents:
        await agent.open_gates(Vehicle_Speed=0.0)
    await suite.wait_status(rollout.rollout_id, "completed")

    async def switched() -> str | None:
        html = await page(monitor, f"/rollouts/{rollout.rollout_id}")
        return html if html.count('class="cell cell--succeeded" id="cell-') == 2 else None

    await monitor.until(switched, 20.0, "both devices shown switched")


async def test_hostile_names_and_reasons_are_shown_as_text_never_as_markup(suite: Any, monitor: Any) -> None:
    (evil,) = await suite.add_agents(1, prefix="evil", hardware_type=HOSTILE_HW)
    v1 = await suite.publish(APP, "1.0.0")
    done = await suite.create(v1, device_ids=[evil.device_id], kind="all-at-once")
    await suite.wait_status(done.rollout_id, "completed")
    # The device then says, in its own words, that the app failed, and invents an app of its own.
    common = dict(device_id=evil.device_id, version="1.0.0", digest=v1.digest, desired_revision=999)
    await evil.publish(AppFailed(app=APP, reason=HOSTILE_REASON, stage="health", **common))
    await evil.publish(AppFailed(app=HOSTILE_APP, reason=HOSTILE_REASON, stage="run", **common))

    async def failed() -> bool:
        response = await monitor.http.get(f"/api/devices/{evil.device_id}")
        return response.status_code == 200 and any(a["state"] == "FAILED" for a in response.json()["apps"])

    await monitor.until(failed, 15.0, "the monitor recorded the hostile failure")

    async def alerted() -> bool:  # its message quotes the device's reason
        alerts = await monitor.get("/api/alerts", device=evil.device_id)
        return any(HOSTILE_REASON in a["message"] for a in alerts["items"])

    await monitor.until(alerted, 20.0, "an app_failed alert quoting the device's reason")
    paths = [*PAGES, f"/devices/{evil.device_id}", f"/devices/{evil.device_id}?part=live",
             f"/rollouts/{done.rollout_id}", f"/audit?device={evil.device_id}&since=2000-01-01T00:00:00"]
    for path in paths:
        html = await page(monitor, path)
        for raw in (HOSTILE_HW, HOSTILE_REASON, HOSTILE_APP, "<script>alert", "<img src=x"):
            assert raw not in html, (path, raw)
    device = await page(monitor, f"/devices/{evil.device_id}")
    assert "&lt;script&gt;alert(&#34;hw&#34;)&lt;/script&gt;" in device  # shown, as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in device
    audit = await page(monitor, f"/audit?device={evil.device_id}&since=2000-01-01T00:00:00")
    assert "\\u003cscript\\u003ealert" in audit  # the device's own words, JSON-escaped in the page
    # Every script a page loads is the monitor's own file: nothing inline, nothing from elsewhere.
    for path in paths:
        html = await page(monitor, path)
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
        for attrs, body in scripts:
            if 'type="application/json"' in attrs:
                continue
            assert body.strip() == "", (path, body[:100])
            assert re.search(r'src="/static/[^"]+"', attrs), (path, attrs)


async def test_pages_for_unknown_ids_or_bad_filters_answer_404_or_422(monitor: Any) -> None:
    assert "knows no device" in text_of(await page(monitor, "/devices/nobody", 404))
    assert "knows no rollout" in text_of(await page(monitor, "/rollouts/no-such-rollout", 404))
    for path in ("/devices/bad%20id", "/rollouts/..%2F..%2Fetc", "/alerts?state=bogus", "/devices?offset=-1",
                 "/devices/car-1?console=..%2Fx", "/ui/changes?rollout=../x"):
        response = await monitor.http.get(path)
        assert response.status_code in (404, 422), (path, response.status_code)
    bad = await page(monitor, "/audit?since=yesterday", 422)
    assert "Cannot search" in text_of(bad)


async def test_the_pages_assets_are_served_by_the_monitor_itself(monitor: Any) -> None:
    html = await page(monitor, "/")
    assets = re.findall(r'(?:src|href)="(/static/[^"?]+)', html)
    assert {"/static/dashboard.css", "/static/dashboard.js", "/static/vendor/htmx/htmx.min.js"} <= set(assets)
    for asset in [*assets, "/static/vendor/uplot/uPlot.iife.min.js", "/static/vendor/htmx/LICENSE",
                  "/static/vendor/uplot/LICENSE"]:
        response = await monitor.http.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100, asset
    assert (await monitor.http.get("/static/../queries.py")).status_code == 404


async def publish_line(nc: Any, device: str, app: str, line: str, stream: str = "stdout") -> None:
    headers = {"Nats-Msg-Id": uuid.uuid4().hex, "Sdv-Ts": f"{time.time():.6f}"}
    await nc.jetstream().publish(f"sdv.logs.{device}.{app}.{stream}", line.encode(), headers=headers)


async def read_lines(http: httpx.AsyncClient, path: str, count: int, headers: dict[str, str] | None = None,
                     ready: asyncio.Event | None = None) -> list[dict[str, Any]]:
    """The first `count` `line` events of a console stream (with their ids)."""
    found: list[dict[str, Any]] = []
    async with http.stream("GET", path, headers=headers or {}) as response:
        assert response.status_code == 200
        if ready is not None:
            ready.set()
        current: dict[str, Any] = {}
        async for raw in response.aiter_lines():
            if not raw:
                if current.get("event") == "line":
                    found.append({"id": current["id"], **json.loads(current["data"])})
                    if len(found) == count:
                        return found
                current = {}
            elif not raw.startswith(":"):
                key, _, value = raw.partition(":")
                current[key] = value.strip()
    return found


async def test_the_console_tail_sends_recent_lines_then_live_ones_and_resumes(suite: Any, monitor: Any) -> None:
    device, app = "car-7", "nav-app"
    for n in range(3):
        await publish_line(suite.nc, device, app, f"boot {n}")
    await publish_line(suite.nc, device, "other-app", "not this app")
    await publish_line(suite.nc, "car-8", app, "not this device")
    await publish_line(suite.nc, device, app, "<b>oops</b>", stream="stderr")
    path = f"/api/devices/{device}/apps/{app}/console"

    ready = asyncio.Event()
    reader = asyncio.create_task(read_lines(monitor.http, path, 5, ready=ready))
    await ready.wait()
    await asyncio.sleep(1.5)  # the recent lines went out; this one is live
    await publish_line(suite.nc, device, app, "live line")
    lines = await asyncio.wait_for(reader, 20)
    assert [(line["stream"], line["line"]) for line in lines] == [
        ("stdout", "boot 0"), ("stdout", "boot 1"), ("stdout", "boot 2"), ("stderr", "<b>oops</b>"),
        ("stdout", "live line")]
    assert all(line["ts"] > 0 for line in lines)

    # A client that dropped after the second line reconnects with Last-Event-ID: it goes on there.
    again = await asyncio.wait_for(read_lines(monitor.http, path, 3, headers={"Last-Event-ID": lines[1]["id"]}), 20)
    assert [line["line"] for line in again] == ["boot 2", "<b>oops</b>", "live line"]

    for bad in ("/api/devices/car-7/apps/Nav.App/console", "/api/devices/car%207/apps/nav-app/console",
                "/api/devices/car-7/apps/nav-app%3E/console"):
        assert (await monitor.http.get(bad)).status_code == 422, bad
