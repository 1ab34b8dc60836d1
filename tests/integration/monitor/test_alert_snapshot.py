"""What the alert rules read each round (adapters/alert_watch.py), on a real PostgreSQL: the
devices that can raise an alert, not the whole fleet — a read of every device every few seconds
stalled the monitor's event loop, and its live (SSE) clients with it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NatsClient

from sdv_events.envelope import Envelope
from sdv_events.registry import default_registry
from sdv_events.schemas.devices import (
    Capabilities,
    DeviceAccepted,
    DeviceAnnounced,
    DeviceCameOnline,
    DeviceWentOffline,
    Kuksa,
)
from sdv_events.schemas.heartbeat import DeviceMetrics, Heartbeat
from sdv_events.store.postgres import EventStore
from sdv_monitor.adapters.alert_watch import AlertWatch
from sdv_monitor.adapters.heartbeats import HeartbeatTracker
from sdv_monitor.adapters.reported import ReportedStates
from sdv_monitor.domain.alerts import Thresholds, conditions
from sdv_monitor.projections import MonitorViews

pytestmark = pytest.mark.timeout(60)
KEY = "U" + "A" * 55


def caps(kuksa: bool) -> Capabilities:
    return Capabilities(hardware_type="linux-generic", arch="x86_64", runtimes=["native"],
                        python_version="3.11", agent_version="t", memory_mb=1, storage_mb=1,
                        kuksa=Kuksa(present=kuksa))


def history(device_id: str, *, kuksa: bool, online: bool, silent_for_s: float = 0) -> list[Envelope]:
    now = datetime.now(UTC)  # when the test runs, not when the module was collected
    bodies: list[msgspec.Struct] = [DeviceAnnounced(device_id, KEY, caps(kuksa)),
                                    DeviceAccepted(device_id, KEY, "operator"),
                                    DeviceCameOnline(device_id, now - timedelta(seconds=silent_for_s))]
    if not online:
        bodies.append(DeviceWentOffline(device_id, now - timedelta(seconds=silent_for_s), silent_for_s))
    found = []
    for version, body in enumerate(bodies, start=1):
        type_name, schema_version = default_registry.describe(body)
        found.append(Envelope(event_id=uuid.uuid4(), stream_id=f"device-{device_id}", version=version,
                              type=type_name, schema_version=schema_version, occurred_at=now, data=body))
    return found


def heartbeat(device_id: str, databroker: str | None) -> Any:
    body = Heartbeat(device_id=device_id, seq=1, sent_at=datetime.now(UTC), agent_version="t", desired_revision=0, apps={},
                     databroker=databroker,
                     device=DeviceMetrics(cpu_pct=1, mem_pct=1, mem_used_bytes=1, mem_total_bytes=2,
                                          disk_pct=1, disk_free_bytes=1))
    return SimpleNamespace(subject=f"sdv.hb.{device_id}", data=msgspec.json.encode(body))


@pytest.fixture
async def watch(store: EventStore, schema: str, nc: NatsClient) -> AlertWatch:
    views = MonitorViews(schema)
    async with store.pool.acquire() as conn:
        await views.create(conn)
        await ReportedStates(store.pool, schema, nc.jetstream()).create(conn)
        fleet = [("ok-1", False, True, 0), ("ok-2", True, True, 0), ("gone", False, False, 3600),
                 ("just-gone", False, False, 10), ("kuksa-down", True, True, 0), ("no-kuksa", False, True, 0),
                 ("kuksa-off", True, False, 3600)]
        for device_id, kuksa, online, silent in fleet:
            for event in history(device_id, kuksa=kuksa, online=online, silent_for_s=silent):
                async with conn.transaction():
                    await views.apply(conn, event)
    beats = HeartbeatTracker()
    for device_id, databroker in (("ok-2", "127.0.0.1:55555"), ("kuksa-down", None), ("no-kuksa", None),
                                  ("kuksa-off", None)):
        await beats._on(heartbeat(device_id, databroker))

    async def no_problems() -> list[str]:
        return []

    return AlertWatch(store, schema, nc, beats, no_problems, thresholds=Thresholds(offline_after_s=300))


async def test_the_alert_rules_read_only_the_devices_that_can_raise_an_alert(watch: AlertWatch) -> None:
    snapshot = await watch.snapshot()

    # Offline devices only: the rule decides which have been silent too long.
    assert sorted(d.device_id for d in snapshot.devices) == ["gone", "just-gone", "kuksa-off"]
    # The databroker is missed only where one is expected: an online device that has KUKSA.
    assert list(snapshot.databroker_missing) == ["kuksa-down"]
    raised = conditions(snapshot, watch.thresholds, datetime.now(UTC))
    assert sorted((c.kind, c.subject) for c in raised.values()) == [
        ("databroker_unreachable", "kuksa-down"), ("device_offline", "gone"), ("device_offline", "kuksa-off")]
