"""The monitor's read model applies each event as one statement (projections/writes.py): the
rollout outcomes the fleet tests rarely reach (a plan written in version 1, a device timed out,
a wave aborted, a version-1 rollback) still land in every view, on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest

from sdv_events.envelope import Envelope
from sdv_events.registry import default_registry
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DeviceTargeted,
    DeviceTimedOut,
    PreviousAssignment,
    RollbackStartedV1,
    RolloutAborted,
    RolloutCreated,
    RolloutPlannedV1,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
    WaveStarted,
)
from sdv_monitor.projections import MonitorViews
from sdv_monitor.projections.writes import Writes

pytestmark = pytest.mark.timeout(60)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def package(version: str) -> PackageInfo:
    digest = version.replace(".", "") * 16
    return PackageInfo(name="nav", version=version, digest=digest, size=1, object_name=f"nav/{digest}",
                       manifest_digest=digest, signature="c2ln", key_id="k", channel="stable",
                       runtime="native", entry_point="main.py", python_version="3.11")


def envelopes(rid: str, bodies: list[msgspec.Struct]) -> list[Envelope]:
    found = []
    for version, body in enumerate(bodies, start=1):
        type_name, schema_version = default_registry.describe(body)
        found.append(Envelope(event_id=uuid.uuid4(), stream_id=f"rollout-{rid}", version=version,
                              type=type_name, schema_version=schema_version, occurred_at=T0,
                              data=body, actor="operator"))
    return found


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await connection.execute(f"CREATE SCHEMA {schema}")
    yield connection
    await connection.execute(f"DROP SCHEMA {schema} CASCADE")
    await connection.close()


async def rows(conn: asyncpg.Connection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await conn.fetch(sql, *args)]


async def test_a_v1_plan_a_timed_out_device_and_a_v1_rollback_land_in_every_view(
        conn: asyncpg.Connection, schema: str) -> None:
    views = MonitorViews(schema)
    await views.create(conn)
    s, rid = schema, "r-legacy"
    old = package("1.0.0")
    history = envelopes(rid, [
        RolloutCreated(rollout_id=rid, package=package("2.0.0"), target=Target(selector="fleet=a"),
                       strategy=Strategy(kind="canary", waves=["1", "100%"]), thresholds=Thresholds(),
                       timeouts=Timeouts(), created_at=T0, created_by="operator"),
        RolloutPlannedV1(waves=[["d1"], ["d2", "d3"]], excluded={"d4": "arch aarch64 not built"},
                         previous=[PreviousAssignment("d1", old), PreviousAssignment("d2", None)],
                         planned_at=T0),
        WaveStarted(0, 1, T0),
        DeviceTargeted("d1", 0, T0),
        DeviceTimedOut("d1", 0),
        RolloutAborted("wave 0: 1 of 1 failed", 0, T0),
        RollbackStartedV1([PreviousAssignment("d1", old)], "wave 0: 1 of 1 failed", T0),
    ])
    for event in history:
        async with conn.transaction():
            await views.apply(conn, event)

    assert await rows(conn, f"SELECT status, devices, waves, excluded, failed, timed_out, current_wave "
                            f"FROM {s}.rollouts") == [("rolled_back", 3, 2, 1, 1, 1, 0)]
    assert await rows(conn, f"SELECT wave, size, state, failed FROM {s}.rollout_waves") == \
        [(0, 1, "aborted", 1)]
    assert await rows(conn, f"SELECT device_id, wave, status, reason FROM {s}.rollout_devices "
                            "ORDER BY device_id") == [
        ("d1", 0, "timed_out", "no report before the deadline"), ("d2", 1, "planned", ""),
        ("d3", 1, "planned", "")]
    assert await rows(conn, f"SELECT device_id, reason FROM {s}.rollout_excluded") == \
        [("d4", "arch aarch64 not built")]
    assert await rows(conn, f"SELECT device_id, version FROM {s}.inventory_previous") == [("d1", "1.0.0")]
    # The rollback gave d1 back what it ran before the rollout.
    assert await rows(conn, f"SELECT device_id, app, desired_version, desired_rollout FROM {s}.device_apps") \
        == [("d1", "nav", "1.0.0", None)]
    assert await rows(conn, f"SELECT summary FROM {s}.device_history ORDER BY summary") == [
        (f"rollout {rid}: targeted in wave 0",), (f"rollout {rid}: timed out",)]
    # Every event of the rollout is in the audit trail under its app, not only the first.
    assert await rows(conn, f"SELECT version, package, device_id FROM {s}.audit_events ORDER BY version") \
        == [(1, "nav", None), (2, "nav", None), (3, "nav", None), (4, "nav", "d1"), (5, "nav", "d1"),
            (6, "nav", None), (7, "nav", None)]


async def test_one_events_statements_run_as_one_and_fail_together(conn: asyncpg.Connection,
                                                                   schema: str) -> None:
    await conn.execute(f"CREATE TABLE {schema}.a (k int PRIMARY KEY, v text);"
                       f"CREATE TABLE {schema}.b (k int PRIMARY KEY, v text)")
    writes = Writes()
    writes.add(f"{schema}.a", f"INSERT INTO {schema}.a VALUES ($1, $2)", 1, "one")
    writes.add(f"{schema}.b", f"INSERT INTO {schema}.b VALUES ($1, $2)", 2, "two")
    await writes.run(conn)
    assert await rows(conn, f"SELECT * FROM {schema}.a UNION ALL SELECT * FROM {schema}.b ORDER BY 1") == \
        [(1, "one"), (2, "two")]

    failing = Writes()
    failing.add(f"{schema}.a", f"INSERT INTO {schema}.a VALUES ($1, $2)", 3, "three")
    failing.add(f"{schema}.b", f"INSERT INTO {schema}.b VALUES ($1, $2)", 2, "duplicate key")
    with pytest.raises(asyncpg.UniqueViolationError):
        await failing.run(conn)
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.a") == 1  # the first one undone too

    twice = Writes()
    twice.add(f"{schema}.a", f"UPDATE {schema}.a SET v = $1", "x")
    with pytest.raises(ValueError, match="written twice"):
        twice.add(f"{schema}.a", f"UPDATE {schema}.a SET v = $1", "y")


def _fleet_history(rid: str) -> list[Envelope]:
    """A fleet's events across every part of the views: devices admitted (one twice online),
    a package, a canary rollout with a failure, the devices' recorded facts, an alert's life."""
    from sdv_events.schemas.agent import AppFailed, AppHealthy, AppInstalled
    from sdv_events.schemas.devices import (
        Capabilities,
        DeviceAccepted,
        DeviceAnnounced,
        DeviceCameOnline,
        DeviceLabelsChanged,
        DeviceWentOffline,
    )
    from sdv_events.schemas.monitor import AlertAcknowledged, AlertRaised, AlertResolved, DeviceFactRecorded
    from sdv_events.schemas.packages import PackagePublished
    from sdv_events.schemas.rollouts import (
        DeviceFailed,
        DevicesPlanned,
        DeviceSucceeded,
        PlannedDevice,
        RolloutCompleted,
        RolloutPlanned,
        WaveCompleted,
    )

    caps = Capabilities(hardware_type="hw", arch="x86_64", runtimes=["native"], python_version="3.11",
                        agent_version="1", memory_mb=1, storage_mb=1)
    devices = [f"d{i}" for i in range(6)]
    p = package("2.0.0")
    streams: list[tuple[str, list[msgspec.Struct]]] = []
    for d in devices:
        streams.append((f"device-{d}", [DeviceAnnounced(d, "U" + "A" * 55, caps),
                                        DeviceAccepted(d, "U" + "A" * 55, "fleet_token"),
                                        DeviceCameOnline(d, T0)]))
    streams.append(("device-d0", [DeviceWentOffline("d0", T0, 30.0), DeviceCameOnline("d0", T0),
                                  DeviceLabelsChanged("d0", {"zone": "a"})]))
    streams.append(("package-nav", [PackagePublished(p)]))
    rollout: list[msgspec.Struct] = [
        RolloutCreated(rollout_id=rid, package=p, target=Target(selector="fleet=a"),
                       strategy=Strategy(kind="canary", waves=["1", "100%"]), thresholds=Thresholds(),
                       timeouts=Timeouts(), created_at=T0, created_by="operator"),
        RolloutPlanned(devices=6, waves=2, planned_at=T0),
        DevicesPlanned(0, [PlannedDevice(d, 0 if d == "d0" else 1) for d in devices]),
        WaveStarted(0, 1, T0), DeviceTargeted("d0", 0, T0), DeviceSucceeded("d0", 0),
        WaveCompleted(0, 1, 0, T0), WaveStarted(1, 5, T0),
        *[DeviceTargeted(d, 1, T0) for d in devices[1:]],
        # d5 twice in one run of outcomes (timed out, then its failure came after all).
        *[DeviceSucceeded(d, 1) for d in devices[1:5]], DeviceTimedOut("d5", 1),
        DeviceFailed("d5", 1, "exit code 3"),
        WaveCompleted(1, 4, 1, T0), RolloutCompleted(5, 1, T0)]
    streams.append((f"rollout-{rid}", rollout))
    facts: list[tuple[str, list[msgspec.Struct]]] = []
    for d in devices:
        common = dict(device_id=d, app="nav", version="2.0.0", digest=p.digest, desired_revision=2,
                      rollout_id=rid)
        said = [AppInstalled(**common), AppHealthy(**common)] if d != "d5" else \
            [AppInstalled(**common), AppFailed(reason="exit code 3", **common)]
        facts.append((f"facts-{d}", [DeviceFactRecorded(
            device_id=d, fact_id=uuid.uuid4(), fact_type=default_registry.describe(f)[0], occurred_at=T0,
            data=msgspec.to_builtins(f)) for f in said]))
    alert = [AlertRaised(alert_id="k.1", kind="app_failed", subject="d5/nav", severity="warning",
                         message="nav FAILED on d5", device_id="d5", rollout_id=rid),
             AlertAcknowledged(alert_id="k.1"), AlertResolved(alert_id="k.1", reason="cleared")]
    found: list[Envelope] = []
    versions: dict[str, int] = {}
    # Interleaved as the bus brings them: a round of each stream's next event at a time.
    queues = [(s, list(bodies)) for s, bodies in [*streams, *facts, ("alert-k", alert)]]
    while any(q for _, q in queues):
        for stream, bodies in queues:
            if bodies:
                body = bodies.pop(0)
                versions[stream] = versions.get(stream, 0) + 1
                type_name, schema_version = default_registry.describe(body)
                found.append(Envelope(event_id=uuid.uuid4(), stream_id=stream, version=versions[stream],
                                      type=type_name, schema_version=schema_version, occurred_at=T0,
                                      data=body, actor="operator"))
    return found


async def _tables(conn: asyncpg.Connection, schema: str, views: MonitorViews) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(tuple(str(v) for v in r) for r in await conn.fetch(f"SELECT * FROM {schema}.{t}"))
            for t in views.tables}


async def test_a_batch_written_set_wise_leaves_every_table_as_its_events_one_by_one(
        conn: asyncpg.Connection, schema: str) -> None:
    history = _fleet_history("r-batch")
    one_by_one, set_wise = MonitorViews(schema), MonitorViews(f"{schema}_b")
    await conn.execute(f"CREATE SCHEMA {schema}_b")
    try:
        await one_by_one.create(conn)
        await set_wise.create(conn)
        for event in history:
            async with conn.transaction():
                await one_by_one.apply(conn, event)
        for start in range(0, len(history), 16):  # batches that cut across streams and waves
            async with conn.transaction():
                await set_wise.apply_batch(conn, history[start:start + 16])
        expected = await _tables(conn, schema, one_by_one)
        assert await _tables(conn, f"{schema}_b", set_wise) == expected
        # The history has something for every part to write.
        assert all(expected[t] for t in ("devices", "device_apps", "rollouts", "rollout_waves",
                                         "rollout_devices", "packages", "device_history",
                                         "audit_events", "alerts", "inventory_rollouts"))
    finally:
        await conn.execute(f"DROP SCHEMA {schema}_b CASCADE")


async def test_offline_devices_and_a_rollback_show_per_device_in_the_rollout_view(
        conn: asyncpg.Connection, schema: str) -> None:
    """Presence and rollback outcomes: a device offline when planned, one skipped and one failed
    for being offline at its deadline, one waited for until it came back, an already-current
    success; then the abort's rollback, device by device, until it completes."""
    from sdv_events.schemas.rollouts import (
        DeviceBackOnline,
        DeviceOffline,
        DeviceRollbackUnconfirmed,
        DeviceRolledBack,
        DevicesOffline,
        DevicesPlanned,
        DeviceSucceeded,
        OfflineDevice,
        PlannedDevice,
        RollbackCompleted,
        RollbackStarted,
        RolloutPlanned,
    )

    views = MonitorViews(schema)
    await views.create(conn)
    s, rid = schema, "r-offline"
    devices = ["d1", "d2", "d3", "d4", "d5"]
    history = envelopes(rid, [
        RolloutCreated(rollout_id=rid, package=package("2.0.0"), target=Target(selector="fleet=a"),
                       strategy=Strategy(waves=["100%"]), thresholds=Thresholds(), timeouts=Timeouts(),
                       created_at=T0, created_by="operator"),
        RolloutPlanned(devices=5, waves=1, planned_at=T0),
        DevicesPlanned(0, [PlannedDevice(d, 0) for d in devices]),
        DevicesOffline(0, [OfflineDevice("d5", 0)]),
        WaveStarted(0, 5, T0),
        *[DeviceTargeted(d, 0, T0) for d in devices],
        DeviceSucceeded("d1", 0, reason="already_current"),
        DeviceOffline("d2", 0, "skipped", T0),
        DeviceOffline("d3", 0, "failed", T0),
        DeviceOffline("d4", 0, "waiting", T0),
        DeviceBackOnline("d4", 0, T0),
        DeviceTimedOut("d4", 0),
        RolloutAborted("wave 0: 2 of 5 failed", 0, T0),
        RollbackStarted("wave 0: 2 of 5 failed", T0, devices=5),
        DeviceRolledBack("d1", 0),
        DeviceRollbackUnconfirmed("d4", 0, "no report by the rollback deadline"),
        RollbackCompleted(rolled_back=1, unconfirmed=1, at=T0),
    ])
    for event in history:
        async with conn.transaction():
            await views.apply(conn, event)

    assert await rows(conn, f"SELECT status, succeeded, failed, timed_out, rolled_back, "
                            f"rollback_unconfirmed, rollback_completed_at FROM {s}.rollouts") == \
        [("rolled_back", 1, 2, 1, 1, 1, T0)]
    assert await rows(conn, f"SELECT device_id, status, reason FROM {s}.rollout_devices "
                            "ORDER BY device_id") == [
        ("d1", "rolled_back", "previous version running again"),
        ("d2", "skipped", "offline at its deadline: skipped"),
        ("d3", "offline", "offline at its deadline"),
        ("d4", "rollback_unconfirmed", "no report by the rollback deadline"),
        ("d5", "targeted", "offline when planned")]

    # The same history in one batch writes the same tables.
    batched = MonitorViews(f"{schema}_b")
    await conn.execute(f"CREATE SCHEMA {schema}_b")
    try:
        await batched.create(conn)
        async with conn.transaction():
            await batched.apply_batch(conn, history)
        assert await _tables(conn, f"{schema}_b", batched) == await _tables(conn, schema, views)
    finally:
        await conn.execute(f"DROP SCHEMA {schema}_b CASCADE")
