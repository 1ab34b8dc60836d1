"""The dashboard in a real headless Chromium (Debian's, driven by Playwright; see
deploy/browser-setup.sh), with the network beyond this machine cut: a rollout of simulated agents
advances on the page without a reload, an app's console line shows up in its tail, and every
page works from the monitor's own files.

Screenshots of each page are saved under `$SDV_TEST_ARTIFACTS/dashboard/` when that variable is
set, else under the test's tmp_path (`dashboard-screenshots/`); the test prints where.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sdv_events.schemas.agent import AppFailed

pytestmark = pytest.mark.timeout(150)
APP = "demo-app"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Outside hosts resolve nowhere and any request not for the loopback goes to a proxy that is not
# there: nothing leaves the machine even if a page asked for it.
CUT_OFF = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
           "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
RGB_TARGETED = "rgb(9, 105, 218)"
RGB_SUCCEEDED = "rgb(26, 127, 55)"


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (root dev group)"
    if not os.access(CHROMIUM, os.X_OK):
        return "no chromium: run deploy/browser-setup.sh (Debian's chromium and chromium-driver)"
    return None


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    root = os.environ.get("SDV_TEST_ARTIFACTS")
    folder = Path(root) / "dashboard" if root else tmp_path / "dashboard-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def browser_page(suite: Any, tmp_path: Path) -> AsyncIterator[Any]:
    if (why := _browser_missing()) is not None:
        pytest.skip(why)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CUT_OFF)
        context = await browser.new_context(viewport={"width": 1366, "height": 768})
        page = await context.new_page()
        try:
            yield page
        except BaseException:
            await page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            await context.close()
            await browser.close()


@pytest.fixture
async def fast_alerts_monitor(suite: Any, schema: str, start_monitor_fn: Any) -> AsyncIterator[Any]:
    monitor = await start_monitor_fn(suite, f"{schema}_m", alert_every_s=0.5)
    yield monitor
    await monitor.http.aclose()
    await monitor.running.stop()


class Watch:
    """Everything the browser asked for and everything that went wrong on its pages."""

    def __init__(self, page: Any) -> None:
        self.requests: list[str] = []
        self.problems: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", self._failed)

    def _failed(self, request: Any) -> None:
        # Server-sent event streams are cut when the page goes to the next one, and so is a live
        # part's fetch still on its way then (a change notice came just before): not a failure.
        stream = "/ui/changes" in request.url or "/console" in request.url or "part=live" in request.url
        if request.failure != "net::ERR_ABORTED" or not stream:
            self.problems.append(f"request failed: {request.url} {request.failure}")


async def shoot(page: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def cell(page: Any, device_id: str) -> tuple[str, str]:
    """A rollout cell's status and its colour as the browser paints it."""
    status, colour = await page.eval_on_selector(
        f"#cell-{device_id}", "e => [e.dataset.status, getComputedStyle(e.querySelector('a')).backgroundColor]")
    return status, colour


async def test_the_dashboard_shows_a_live_rollout_and_an_apps_console_with_the_network_cut(
        suite: Any, fast_alerts_monitor: Any, browser_page: Any, artifacts: Path) -> None:
    from playwright.async_api import expect

    monitor, page = fast_alerts_monitor, browser_page
    base = str(monitor.http.base_url).rstrip("/")
    watch = Watch(page)
    agents = await suite.add_agents(6)
    await suite.add_agents(1, prefix="docker-only", runtimes=["docker"])  # excluded, with its reason
    gate = asyncio.Event()  # every simulated agent holds its answer until the test opens it
    for agent in agents:
        agent.gate = gate
    v1 = await suite.publish(APP, "1.0.0")
    rollout_id = f"r-{uuid.uuid4().hex[:10]}"
    await suite.create(v1, selector="fleet=sim", waves=["2", "100%"], device_s=60.0, rollout_id=rollout_id)

    # The rollout's page while its first wave waits for the agents: two cells installing.
    async def known() -> bool:
        return (await monitor.http.get(f"/api/rollouts/{rollout_id}")).status_code == 200

    await monitor.until(known, 15.0, "the monitor knows the rollout")
    await page.goto(f"{base}/rollouts/{rollout_id}")
    await page.wait_for_selector('.wave--running .cell[data-status="targeted"]', timeout=20_000)
    await page.wait_for_selector("#live-state[data-state=live]", timeout=10_000)
    first_wave = await page.eval_on_selector_all("#wave-1 .cell", "cells => cells.map(c => c.id.slice(5))")
    assert len(first_wave) == 2
    assert await cell(page, first_wave[0]) == ("targeted", RGB_TARGETED)
    assert "docker-only-00" in await page.inner_text("#live")  # excluded …
    assert "no native runtime" in await page.inner_text("#live")  # … with the reason
    await shoot(page, artifacts, "rollout-waiting")
    await page.evaluate("window.sdvNoReload = 'still the same page'")

    # The agents answer: the same page, never reloaded, turns the cells green wave by wave.
    gate.set()
    for device_id in first_wave:
        await page.wait_for_selector(f'#cell-{device_id}[data-status="succeeded"]', timeout=20_000)
    assert await cell(page, first_wave[0]) == ("succeeded", RGB_SUCCEEDED)
    await expect(page.locator('#wave-2 .cell[data-status="succeeded"]')).to_have_count(4, timeout=20_000)
    await page.wait_for_selector("#rollout-status .badge--completed", timeout=20_000)
    assert await page.evaluate("window.sdvNoReload") == "still the same page"
    await page.wait_for_selector("#progress-chart canvas", state="attached", timeout=5_000)  # the chart
    await shoot(page, artifacts, "rollout-completed")

    # A device's page: its console tail shows a line the app prints now (as the agent publishes it).
    device_id = agents[0].device_id
    await page.goto(f"{base}/devices/{device_id}?console={APP}")
    await page.wait_for_selector("#console-state:has-text('Following')", timeout=10_000)
    headers = {"Nats-Msg-Id": uuid.uuid4().hex, "Sdv-Ts": f"{time.time():.6f}"}
    await suite.nc.jetstream().publish(f"sdv.logs.{device_id}.{APP}.stdout",
                                       b"speed 42 km/h <b>not bold</b>", headers=headers)
    await page.wait_for_selector("#console-lines .line:has-text('speed 42 km/h')", timeout=10_000)
    assert await page.locator("#console-lines b").count() == 0  # a line is text, not markup
    # The app then fails on that device: its state changes on the open page.
    await agents[0].publish(AppFailed(device_id=device_id, app=APP, version="1.0.0", digest=v1.digest,
                                      desired_revision=999, reason="exit code 3", stage="run"))
    await page.wait_for_selector("#live .badge--FAILED", timeout=15_000)
    await shoot(page, artifacts, "device")

    # The other pages, each with what this fleet did.
    for name, path, shown in (
            ("overview", "/", f"{APP}"), ("devices", "/devices", device_id),
            ("rollouts", "/rollouts", rollout_id), ("alerts", "/alerts", "exit code 3"),
            ("audit", f"/audit?rollout={rollout_id}&since=2000-01-01T00:00:00", "RolloutCompleted")):
        await page.goto(f"{base}{path}")
        await page.wait_for_selector(f"main:has-text('{shown}')", timeout=15_000)
        await shoot(page, artifacts, name)
    # Keyboard: the skip link is the first stop and moves focus to the content.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"

    print(f"\ndashboard screenshots: {artifacts}")
    saved = {p.name for p in await asyncio.to_thread(lambda: list(artifacts.glob("*.png")))}
    assert {f"{n}.png" for n in ("rollout-waiting", "rollout-completed", "device", "overview", "devices",
                                 "rollouts", "alerts", "audit")} <= saved
    hosts = {urlsplit(url).hostname for url in watch.requests if not url.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, hosts
    assert watch.problems == []
