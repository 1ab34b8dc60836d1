"""Reads of a rollout (`Orchestrator.state`, used by `get`, the facts consumer and `start`) share
the command runner's cached state, which `evolve` updates in place: a read that overlapped a
command on the same stream used to apply the same new events twice (counts inflated, a wave
"completed" early). Real PostgreSQL; no bus needed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import Strategy, Target
from sdv_events.store import EventStore
from sdv_orchestrator.application import Orchestrator, rollout_stream
from sdv_orchestrator.domain.rollout import rollout_decider
from sdv_orchestrator.domain.rollout_commands import CreateRollout, Report, StartRollout

PACKAGE = PackageInfo(name="app", version="1.0.0", digest="d" * 64, size=1, object_name="app/d",
                      manifest_digest="m", signature="s", key_id="k", channel="dev", runtime="native",
                      entry_point="main.py", python_version="3.11")


async def test_reads_overlapping_reports_never_count_a_device_twice(store: EventStore) -> None:
    orchestrator = Orchestrator(store, peers=None, desired=None)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    devices = [f"d{i}" for i in range(10)]
    await orchestrator.run("r1", CreateRollout(rollout_id="r1", package=PACKAGE,
                                               target=Target(device_ids=devices),
                                               strategy=Strategy(kind="all-at-once"), now=now))
    await orchestrator.run("r1", StartRollout(device_ids=devices, now=now))

    async def read() -> None:
        for _ in range(100):
            await orchestrator.state("r1")

    async def report() -> None:
        for device_id in devices[:5]:
            await orchestrator.report("r1", [Report(device_id, True)])

    await asyncio.gather(read(), read(), report())
    cached = await orchestrator.state("r1")
    stored = rollout_decider.fold(e.data for e in await store.read_stream(rollout_stream("r1")))
    assert (cached.status, cached.counts[0].succeeded) == ("running", 5)
    assert (stored.status, stored.counts[0].succeeded) == ("running", 5)
