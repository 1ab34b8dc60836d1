"""Labels, selectors and the inventory read model over the bus; selector SQL against the
selector's own matcher on random label sets; a restart rebuilds identical state."""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import msgspec
import nats
import pytest

from sdv_events.auth import raw_creds
from sdv_events.bus import CommandClient, InvalidRequest, NotFound
from sdv_events.processing.admin import ReadModelRebuilt, RebuildReadModel
from sdv_events.schemas.devices import (
    AcceptDevice,
    CountDevices,
    DecommissionDevice,
    DeviceCounts,
    DeviceList,
    DeviceView,
    GetDevice,
    ListDevices,
    RejectDevice,
    ResolvedDevices,
    ResolveSelector,
    SetLabels,
)
from sdv_events.selectors import Requirement, Selector
from sdv_registry.selector_sql import Filters, where_clause

from .conftest import FLEET_TOKEN, Harness, eventually, registry_settings, running_registry

FLEET = {
    "orin-1": {"type": "jetson-orin", "env": "test", "group": "canary"},
    "orin-2": {"type": "jetson-orin", "env": "prod"},
    "orin-3": {"type": "jetson-orin", "env": "test", "retired": ""},
    "nuc-1": {"type": "linux-generic", "env": "test"},
    "proto-1": {"type": "automotive-prototype"},
}


async def _fleet(registry: Harness) -> None:
    for device_id, labels in FLEET.items():
        agent = registry.agent(device_id)
        await agent.announce(token=FLEET_TOKEN)
        await registry.call("set_labels", SetLabels(device_id, labels), DeviceView)
    pending = registry.agent("pending-1")
    await pending.announce()
    await registry.call("set_labels", SetLabels("pending-1", {"type": "jetson-orin", "env": "test"}),
                        DeviceView)


async def _resolve(registry: Harness, selector: str) -> list[str]:
    return (await registry.call("resolve", ResolveSelector(selector=selector), ResolvedDevices)).device_ids


async def _caught_up(registry: Harness, expected: int) -> bool:
    counts = await registry.call("count", CountDevices(), DeviceCounts)
    return counts.total == expected and counts.by_status.get("pending") == 1 and \
        len((await registry.call("list", ListDevices(selector="env"), DeviceList)).devices) == 5


async def test_selectors_resolve_accepted_devices_by_labels(registry: Harness) -> None:
    await _fleet(registry)
    assert await eventually(lambda: _caught_up(registry, 6))
    assert await _resolve(registry, "type=jetson-orin,env=test") == ["orin-1", "orin-3"]
    assert await _resolve(registry, "type==jetson-orin, env in (test, prod), !retired") == ["orin-1", "orin-2"]
    assert await _resolve(registry, "env notin (test)") == ["orin-2", "proto-1"]
    assert await _resolve(registry, "env!=test,type") == ["orin-2", "proto-1"]
    assert await _resolve(registry, "group=canary") == ["orin-1"]
    assert await _resolve(registry, "retired") == ["orin-3"]
    assert await _resolve(registry, "") == ["nuc-1", "orin-1", "orin-2", "orin-3", "proto-1"]
    # list covers every status (the pending device too); count splits by status.
    listed = await registry.call("list", ListDevices(selector="type=jetson-orin,env=test"), DeviceList)
    assert [d.device_id for d in listed.devices] == ["orin-1", "orin-3", "pending-1"]
    page = await registry.call("list", ListDevices(selector="type", limit=2, offset=1), DeviceList)
    assert ([d.device_id for d in page.devices], page.total) == (["orin-1", "orin-2"], 6)
    counts = await registry.call("count", CountDevices(selector="env=test"), DeviceCounts)
    assert (counts.total, counts.by_status) == (4, {"accepted": 3, "pending": 1})

    changed = await registry.call("set_labels", SetLabels("orin-3", {"env": "prod"}, ["retired"]),
                                  DeviceView)
    assert changed.labels == {"type": "jetson-orin", "env": "prod"}

    async def moved() -> bool:
        return await _resolve(registry, "env=prod") == ["orin-2", "orin-3"]

    assert await eventually(moved)


async def test_invalid_selector_is_a_typed_error_with_its_position(registry: Harness) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await registry.call("resolve", ResolveSelector(selector="env in (test"), ResolvedDevices)
    assert caught.value.details["position"] == "12"
    assert "',' or ')'" in caught.value.details["problem"]
    with pytest.raises(InvalidRequest, match="invalid label key"):
        await registry.call("set_labels", SetLabels("x", {"-bad": "1"}), DeviceView)


def _random_selector(rng: random.Random, keys: list[str], values: list[str]) -> Selector:
    requirements = []
    for _ in range(rng.randint(0, 3)):
        op = rng.choice(["=", "!=", "in", "notin", "exists", "!exists"])
        count = {"=": 1, "!=": 1, "in": rng.randint(1, 3), "notin": rng.randint(1, 3)}.get(op, 0)
        requirements.append(Requirement(rng.choice(keys), op, tuple(rng.sample(values, count))))
    return Selector(tuple(requirements))


async def test_selector_sql_agrees_with_the_selector_on_random_label_sets(
    database_url: str, schema: str
) -> None:
    rng = random.Random(20261122)
    keys, values = ["env", "type", "ex.io/group", "gpu"], ["", "a", "b", "test", "x.y"]
    rows = {f"d{i}": {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, 4))}
            for i in range(300)}
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id text, labels jsonb)")
        await conn.executemany(f"INSERT INTO {schema}.t VALUES ($1, $2)",
                               [(i, msgspec.json.encode(lab).decode()) for i, lab in rows.items()])
        for _ in range(300):
            selector = _random_selector(rng, keys, values)
            where, params = where_clause(Filters(selector))
            got = {r["id"] for r in await conn.fetch(f"SELECT id FROM {schema}.t WHERE {where}", *params)}
            assert got == {i for i, lab in rows.items() if selector.matches(lab)}, selector
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def _snapshot(ops: CommandClient) -> dict[str, Any]:
    listed = await ops.call("registry", "list", ListDevices(limit=1000), DeviceList)
    views = {d.device_id: await ops.call("registry", "get", GetDevice(d.device_id), DeviceView)
             for d in listed.devices}
    return {"list": listed, "get": views,
            "count": await ops.call("registry", "count", CountDevices(), DeviceCounts),
            "resolve": await ops.call("registry", "resolve", ResolveSelector(selector="env"),
                                      ResolvedDevices)}


async def test_restart_rebuilds_identical_state_from_the_event_store(
    auth_nats, database_url, schema, trust, tmp_path, store,  # type: ignore[no-untyped-def]
) -> None:
    settings = registry_settings(auth_nats.url, database_url, schema, trust, tmp_path)
    nc = await nats.connect(auth_nats.url, user_credentials=raw_creds(trust.service_creds()))
    ops = CommandClient(nc)
    async with running_registry(settings):
        registry = Harness(auth_nats.url, trust, ops, store, settings, auth_nats)
        await _fleet(registry)
        await registry.call("reject", RejectDevice("proto-1", "no"), DeviceView)
        await registry.call("decommission", DecommissionDevice("nuc-1", "sold"), DeviceView)
        await registry.call("accept", AcceptDevice("pending-1"), DeviceView)

        async def settled() -> dict[str, Any] | None:
            snap = await _snapshot(ops)
            return snap if snap["count"].by_status == {
                "accepted": 4, "rejected": 1, "decommissioned": 1} and all(
                d.version == snap["get"][d.device_id].version for d in snap["list"].devices) else None

        before = await eventually(settled)
        assert before, await _snapshot(ops)

    # Registry down: drop its read model and its consumer's ledger, as if it started on a new database host.
    conn = await asyncpg.connect(database_url)
    await conn.execute(f"DROP TABLE {schema}.devices; "
                       f"DELETE FROM {schema}.consumer_streams WHERE consumer = 'device_inventory'; "
                       f"DELETE FROM {schema}.consumer_positions WHERE consumer = 'device_inventory'")
    await conn.close()

    async with running_registry(settings):
        async def rebuilt() -> dict[str, Any] | None:
            snap = await _snapshot(ops)
            return snap if snap == before else None

        after = await eventually(rebuilt)
        assert after == before, (await _snapshot(ops), before)
    await nc.close()


async def test_an_operator_rebuilds_the_inventory_from_postgres_while_the_registry_runs(
    registry: Harness, database_url: str, schema: str,
) -> None:
    await _fleet(registry)

    async def settled() -> dict[str, Any] | None:  # every device in, every label set, and calm
        snap = await _snapshot(registry.ops)
        done = snap["count"].total == len(FLEET) + 1 and all(
            d.labels and d.version == snap["get"][d.device_id].version for d in snap["list"].devices)
        return snap if done and snap == await _snapshot(registry.ops) else None

    before = await eventually(settled, timeout=30)
    assert before
    conn = await asyncpg.connect(database_url)
    await conn.execute(f"UPDATE {schema}.devices SET labels = '{{}}'::jsonb")  # a damaged model
    await conn.close()
    assert await _snapshot(registry.ops) != before

    done = await registry.ops.call("registry", "rebuild", RebuildReadModel("device_inventory"),
                                   ReadModelRebuilt, timeout=60)
    assert done.consumer == "device_inventory"
    assert done.applied >= 5
    assert await _snapshot(registry.ops) == before
    with pytest.raises(NotFound, match="no consumer named 'nosuch'"):
        await registry.ops.call("registry", "rebuild", RebuildReadModel("nosuch"), ReadModelRebuilt)
