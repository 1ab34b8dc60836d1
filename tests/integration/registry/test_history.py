"""The registry serves its own history from PostgreSQL over the bus, in operator-mode NATS:
what happened to a device, who did it, and under which command."""

from __future__ import annotations

from sdv_events.history import HistoryQuery, read_history
from sdv_events.schemas.devices import (
    AcceptDevice,
    DeviceAccepted,
    DeviceAnnounced,
    DeviceLabelsChanged,
    DeviceView,
    SetLabels,
)
from sdv_events.stream_owners import owner_of

from .conftest import Harness


async def test_registry_history_of_a_device_names_who_did_what_in_order(registry: Harness) -> None:
    agent = registry.agent("orin-h1")
    await agent.announce()
    await registry.call("accept", AcceptDevice("orin-h1", "looks right"), DeviceView)
    await registry.call("set_labels", SetLabels("orin-h1", {"env": "prod"}, []), DeviceView)

    stream = "device-orin-h1"
    assert owner_of(stream) == "registry"
    history = [e async for e in read_history(registry.ops, "registry", HistoryQuery(stream_id=stream))]

    assert history == await registry.store.read_stream(stream)
    assert [e.version for e in history] == list(range(1, len(history) + 1))
    assert isinstance(history[0].data, DeviceAnnounced)
    by_operator = [e for e in history if e.actor == "operator:test"]
    assert [type(e.data) for e in by_operator] == [DeviceAccepted, DeviceLabelsChanged]
    assert by_operator[1].data.labels == {"env": "prod"}
    assert all(e.causation_id and e.correlation_id for e in by_operator)
    assert by_operator[0].causation_id != by_operator[1].causation_id  # one command each
