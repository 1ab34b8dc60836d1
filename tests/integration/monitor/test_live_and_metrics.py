"""Live progress for dashboards (server-sent events, resumable with Last-Event-ID) and the
Prometheus scrape, on a real rollout."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)
APP = "live-app"


async def read_sse(http: httpx.AsyncClient, path: str, until_type: str, *, headers: dict[str, str] | None = None,
                   events: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """SSE events (id, event, data) until one of type `until_type` arrives."""
    found: list[dict[str, Any]] = [] if events is None else events
    async with http.stream("GET", path, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if not line:
                if "data" in current:
                    found.append(current)
                    if current.get("event") == until_type:
                        return found
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                current[key] = json.loads(value.strip()) if key == "data" else value.strip()
    return found


async def test_an_sse_client_follows_a_rollout_and_resumes_after_a_reconnect(suite: Any, monitor: Any) -> None:
    await suite.add_agents(4)
    v1 = await suite.publish(APP, "1.0.0")
    rollout_id = f"r-{uuid.uuid4().hex[:12]}"
    seen: list[dict[str, Any]] = []
    reader = asyncio.create_task(read_sse(monitor.http, f"/api/stream?rollout={rollout_id}",
                                          "RolloutCompleted", events=seen))
    await asyncio.sleep(0.5)  # the client is connected before the rollout starts
    await suite.create(v1, selector="fleet=sim", waves=["1", "100%"], rollout_id=rollout_id)
    events = await asyncio.wait_for(reader, 30)

    types = [e["event"] for e in events]
    assert types[0] == "RolloutCreated"
    assert types[-1] == "RolloutCompleted"
    assert types.count("DeviceSucceeded") == 4
    assert types.count("AppHealthy") == 4
    assert all(e["data"]["stream_id"] == f"rollout-{rollout_id}" or e["data"]["stream_id"].startswith("agent-")
               for e in events)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)

    # A client that dropped after the fifth event reconnects with Last-Event-ID: it gets the rest,
    # exactly, then whatever comes live.
    resumed = await asyncio.wait_for(read_sse(monitor.http, f"/api/stream?rollout={rollout_id}",
                                              "RolloutCompleted", headers={"Last-Event-ID": events[4]["id"]}), 10)
    assert [e["id"] for e in resumed] == [e["id"] for e in events[5:]]

    bad = await monitor.http.get("/api/stream", params={"rollout": "../x"})
    assert bad.status_code == 422


async def test_metrics_parse_and_show_the_fleet_the_rollout_and_the_services(suite: Any, monitor: Any) -> None:
    await suite.add_agents(3)
    v1 = await suite.publish(APP, "2.0.0")
    view = await suite.create(v1, selector="fleet=sim", kind="all-at-once")
    await suite.wait_status(view.rollout_id, "completed")

    async def scraped() -> Any:
        text = (await monitor.http.get("/metrics")).text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        done = [v for (name, labels), v in samples.items() if name == "sdv_rollout_devices_done"
                and ("outcome", "succeeded") in labels and ("rollout_id", view.rollout_id) in labels]
        healthy = {dict(labels)["service"]: v for (name, labels), v in samples.items()
                   if name == "sdv_service_healthy"}
        apps = {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "sdv_apps"}
        ok = done == [3.0] and healthy.get("orchestrator") == 1.0 and apps == {"RUNNING": 3.0}
        return samples if ok else None

    samples = await monitor.until(scraped, 20.0, "/metrics shows the finished rollout, the apps running "
                                                 "and healthy services")
    devices = {dict(labels)["status"]: v for (name, labels), v in samples.items() if name == "sdv_devices"}
    assert devices == {"accepted": 3.0}
    apps = {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "sdv_apps"}
    assert apps == {"RUNNING": 3.0}
    assert any(name == "sdv_events_seen_total" and dict(labels)["category"] == "rollout" and v > 0
               for (name, labels), v in samples.items())
    assert any(name == "sdv_relay_behind_events" for (name, _), _v in samples.items())
