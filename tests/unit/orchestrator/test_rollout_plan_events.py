"""Bounded rollout events: a plan of any fleet size is a header and chunks each far below the
event store's limit; rollbacks name no device; histories written with version 1 events (every
device inline) still fold. Given events / when command / then events, no servers."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from sdv_events.codec import decode_body, encode
from sdv_events.registry import default_registry
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    DevicesExcluded,
    DevicesPlanned,
    DeviceTargeted,
    PreviousAssignment,
    PreviousPackages,
    RollbackStarted,
    RollbackStartedV1,
    RolloutAborted,
    RolloutCreated,
    RolloutPlanned,
    RolloutPlannedV1,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
    WaveStarted,
)
from sdv_orchestrator.domain.plan_events import CHUNK_BYTES, chunks
from sdv_orchestrator.domain.rollout import rollout_decider
from sdv_orchestrator.domain.rollout_commands import Report, ReportDevices, RollbackRollout, StartRollout

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
BOUND = 64 * 1024  # the largest event at 10,000 devices must stay under this


def package(version: str) -> PackageInfo:
    """A package the size of a real one (≈900 bytes encoded)."""
    return PackageInfo(
        name="app", version=version, digest=version[0] * 64, size=48_213, object_name=version[0] * 64,
        manifest_digest="m" * 64, signature="s" * 88, key_id="k" * 16, channel="stable",
        runtime="native", entry_point="main.py", python_version="3.11",
        description="Reads the vehicle speed and warns the driver above a limit. " * 3,
        vss_reads=["Vehicle.Speed", "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"],
        vss_writes=["Vehicle.Cabin.Infotainment.HMI.CurrentLanguage"],
        bundled_wheels=["attrs-23.2.0-py3-none-any.whl", "six-1.16.0-py2.py3-none-any.whl"],
    )


NEW, OLD, OLDER = package("3.0.0"), package("2.0.0"), package("1.0.0")


def fold(events: list[object]):  # type: ignore[no-untyped-def]
    state = rollout_decider.empty()
    for event in events:
        state = rollout_decider.evolve(state, event)  # type: ignore[arg-type]
    return state


def created(strategy: Strategy = Strategy("canary", ["1%", "10%", "100%"])) -> RolloutCreated:
    return RolloutCreated(rollout_id="r1", package=NEW, target=Target(selector="env=prod"),
                          strategy=strategy, thresholds=Thresholds(), timeouts=Timeouts(600, 0),
                          created_at=T0)


def test_planning_10000_upgrading_devices_keeps_every_event_under_64_kib() -> None:
    devices = [f"vin-WVWZZZ1JZXW{i:06d}" for i in range(10_000)]
    # Given a created rollout, when 10,000 devices that run one of two older versions start it
    state = fold([created()])
    start = StartRollout(
        device_ids=devices, excluded={f"old-{i:05d}": "python 3.9, package needs 3.11"
                                      for i in range(2_000)},
        previous_packages=[OLD, OLDER], previous={d: i % 2 for i, d in enumerate(devices)}, now=T0)
    began = time.perf_counter()
    events = list(rollout_decider.decide(start, state))
    decide_s = time.perf_counter() - began
    # then every event, encoded as the store keeps it, is far below the bound …
    sizes = {type(e).__name__: max(len(encode(x)) for x in events if type(x) is type(e))
             for e in events}
    assert max(sizes.values()) < BOUND, sizes
    assert max(len(encode(e)) for e in events if isinstance(e, DevicesPlanned)) <= CHUNK_BYTES + 64
    (header,) = [e for e in events if isinstance(e, RolloutPlanned)]
    assert (header.devices, header.waves, header.excluded, header.previous_packages) == \
        (10_000, 3, 2_000, 2)
    # … each distinct previous package is written once …
    assert [p for e in events if isinstance(e, PreviousPackages) for p in e.packages] == [OLD, OLDER]
    # … and the plan folds back to what it was given.
    state = fold([created(), *events])
    assert [len(w) for w in state.waves] == [100, 900, 9_000]
    assert sorted(d for w in state.waves for d in w) == devices
    assert all(state.previous_packages[state.previous[d]] == (OLD, OLDER)[i % 2]
               for i, d in enumerate(devices))
    assert len(state.excluded) == 2_000
    assert len([e for e in events if isinstance(e, DeviceTargeted)]) == 100
    assert decide_s < 2.0, decide_s


def test_a_rollback_names_no_device_however_many_were_touched() -> None:
    devices = [f"d{i:05d}" for i in range(5_000)]
    state = fold([created(Strategy("all-at-once"))])
    events = list(rollout_decider.decide(StartRollout(
        device_ids=devices, previous_packages=[OLD], previous=dict.fromkeys(devices, 0), now=T0),
        state))
    state = fold([created(Strategy("all-at-once")), *events])
    for event in rollout_decider.decide(ReportDevices([Report("d00000", True)], T0), state):
        state = rollout_decider.evolve(state, event)
    aborted, rollback = rollout_decider.decide(RollbackRollout(T0, "regression"), state)
    assert isinstance(aborted, RolloutAborted)
    assert isinstance(rollback, RollbackStarted)
    assert rollback.devices == 5_000
    assert len(encode(rollback)) < 200


def test_devices_without_the_app_are_planned_without_a_previous_package() -> None:
    state = fold([created(Strategy("all-at-once"))])
    events = list(rollout_decider.decide(StartRollout(
        device_ids=["a", "b"], previous_packages=[OLD, OLDER], previous={"b": 1}, now=T0), state))
    assert [e for e in events if isinstance(e, PreviousPackages)] == [PreviousPackages(0, [OLDER])]
    (planned,) = [e for e in events if isinstance(e, DevicesPlanned)]
    assert encode(planned) == b'{"chunk":0,"devices":[["a",0,null],["b",0,0]]}'
    assert not [e for e in events if isinstance(e, DevicesExcluded)]


def test_a_previous_reference_outside_the_table_is_refused() -> None:
    state = fold([created()])
    with pytest.raises(Exception, match="outside previous_packages"):
        rollout_decider.decide(StartRollout(device_ids=["a"], previous={"a": 3}, now=T0), state)


def test_chunks_keep_to_the_byte_budget_even_with_long_device_ids() -> None:
    rows = [[f"{'x' * 200}-{i}", 0, 1] for i in range(1_000)]
    parts = chunks(rows, budget=4096)
    assert [r for p in parts for r in p] == rows
    assert all(len(encode(p)) <= 4096 for p in parts)
    assert len(chunks([["one-entry-larger-than-the-budget" * 10]], budget=16)) == 1


def test_a_rollout_planned_with_v1_events_still_folds_and_rolls_back_each_device_to_its_version() -> None:
    # Given a history written before version 2, as stored (type names, JSON bodies) …
    v1_plan = RolloutPlannedV1(
        waves=[["a"], ["b", "c"]], excluded={"z": "no KUKSA databroker"},
        previous=[PreviousAssignment("a", OLD), PreviousAssignment("b", OLDER),
                  PreviousAssignment("c", None)], planned_at=T0)
    stored = [("orchestrator.RolloutCreated.v1", created(Strategy("canary", ["1", "100%"]))),
              ("orchestrator.RolloutPlanned.v1", v1_plan),
              ("orchestrator.WaveStarted.v1", WaveStarted(0, 1, T0)),
              ("orchestrator.DeviceTargeted.v1", DeviceTargeted("a", 0, T0))]
    history = [decode_body(name, encode(body)) for name, body in stored]
    assert isinstance(history[1], RolloutPlannedV1)
    state = fold(history)
    assert state.waves == [["a"], ["b", "c"]]
    assert state.excluded == {"z": "no KUKSA databroker"}
    # … when it is rolled back by hand,
    rollback = rollout_decider.decide(RollbackRollout(T0, "regression"), state)[-1]
    # then the rollback lists the touched device with its own previous version, as version 1
    # did (read models that applied the v1 plan recorded no previous packages of their own).
    assert rollback == RollbackStartedV1([PreviousAssignment("a", OLD)], "regression", T0)
    assert default_registry.describe(rollback) == ("orchestrator.RollbackStarted.v1", 1)
    again = decode_body("orchestrator.RollbackStarted.v1", encode(rollback))
    assert fold([*history, again]).status == "rolled_back"


def test_current_plan_and_rollback_events_are_version_2() -> None:
    assert default_registry.describe(
        RolloutPlanned(devices=1, waves=1, planned_at=T0)) == ("orchestrator.RolloutPlanned.v2", 2)
    assert default_registry.describe(RollbackStarted("r", T0, 1)) == ("orchestrator.RollbackStarted.v2", 2)
