"""Agents' facts → `DeviceFactRecorded` in the monitor's own event store (one per fact, once).

Fed by the shared consumer runner with every fact on `sdv.evt.agent.>` (the runner has checked
that the subject — which a device's NATS permissions confine to its own id — names the fact's
stream). The recorded event's id is derived from (device, fact id), so a redelivered fact hits
the store's unique event id and is recorded once; another device cannot collide with it because
its device id is part of the derivation.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import msgspec
import structlog

from sdv_events.envelope import Envelope, Metadata
from sdv_events.errors import ConcurrencyConflict
from sdv_events.ids import split_stream_id, stream_id
from sdv_events.schemas.monitor import FACTS_CATEGORY, MAX_RECORDED_FACT_BYTES, DeviceFactRecorded
from sdv_events.store.postgres import EventStore

log = structlog.get_logger("sdv.monitor.facts")
_NAMESPACE = uuid.UUID("6f1c1b4e-6d4a-4c1e-9a53-5d2f0c9e7a10")


def recorded_id(device_id: str, fact_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{device_id}/{fact_id}")


def recorded(event: Envelope) -> DeviceFactRecorded:
    device_id = split_stream_id(event.stream_id)[1]
    body = msgspec.to_builtins(event.data)
    size = len(msgspec.json.encode(body))
    if size > MAX_RECORDED_FACT_BYTES or not isinstance(body, dict):
        return DeviceFactRecorded(device_id=device_id, fact_id=event.event_id, fact_type=event.type,
                                  occurred_at=event.occurred_at, oversized_bytes=size)
    return DeviceFactRecorded(device_id=device_id, fact_id=event.event_id, fact_type=event.type,
                              occurred_at=event.occurred_at, data=body)


class FactRecorder:
    name = "fact_recorder"
    filter_subjects = ("sdv.evt.agent.>",)

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def handle(self, events: Sequence[Envelope]) -> None:
        for event in events:
            await self._record(event)

    async def _record(self, event: Envelope) -> None:
        fact = recorded(event)
        stream = stream_id(FACTS_CATEGORY, fact.device_id)
        metadata = Metadata(correlation_id=event.correlation_id, causation_id=str(event.event_id),
                            actor=f"device:{fact.device_id}", trace=event.trace)
        envelope_id = recorded_id(fact.device_id, fact.fact_id)
        for _ in range(5):  # another replica may append to the same device's stream meanwhile
            version = await self.store.stream_version(stream)
            envelope = self.store.wrap(stream, version + 1, fact, metadata, self.store.clock())
            envelope = msgspec.structs.replace(envelope, event_id=envelope_id)
            try:
                await self.store.append_envelopes(stream, version, [envelope])
                return
            except asyncpg.UniqueViolationError:
                if await self._already(envelope_id):
                    return  # recorded before: a redelivery
                raise
            except ConcurrencyConflict:
                continue
        raise RuntimeError(f"could not record fact {fact.fact_id} of {fact.device_id}: stream busy")

    async def _already(self, event_id: uuid.UUID) -> bool:
        return bool(await self.store.pool.fetchval(
            f"SELECT 1 FROM {self.store.schema}.events WHERE event_id = $1", event_id))
