"""Where a consumer heals a gap from: the store that owns the stream.

`StoreSource` reads the service's own event store; `HistorySource` asks the owning service for
its history over the bus (`sdv_events.history`); `OwnThenHistory` reads the own store first and
asks the bus only for streams the service does not hold.
"""

from __future__ import annotations

from typing import Protocol

from nats.aio.client import Client as NatsClient

from sdv_events.envelope import Envelope
from sdv_events.history import MAX_LIMIT, HistoryQuery, read_history
from sdv_events.registry import EventRegistry, default_registry
from sdv_events.store.postgres import EventStore
from sdv_events.stream_owners import owner_of


class StreamSource(Protocol):
    async def read_stream(self, stream_id: str, from_version: int) -> list[Envelope]:
        """The stream's events from `from_version` on, in version order (may be empty)."""
        ...


class StoreSource:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def read_stream(self, stream_id: str, from_version: int) -> list[Envelope]:
        return await self.store.read_stream(stream_id, from_version=from_version)


class HistorySource:
    """Another service's stream, served by that service over `sdv.cmd.<service>.history`."""

    def __init__(self, nc: NatsClient, *, registry: EventRegistry = default_registry,
                 timeout: float = 5.0) -> None:
        self.nc = nc
        self.registry = registry
        self.timeout = timeout

    async def read_stream(self, stream_id: str, from_version: int) -> list[Envelope]:
        owner = owner_of(stream_id)
        if owner is None:
            return []  # devices' facts: no service stores them
        query = HistoryQuery(stream_id=stream_id, from_version=from_version, limit=MAX_LIMIT)
        return [e async for e in read_history(self.nc, owner, query, registry=self.registry,
                                              timeout=self.timeout)]


class OwnThenHistory:
    def __init__(self, own: StreamSource, others: StreamSource | None) -> None:
        self.own = own
        self.others = others

    async def read_stream(self, stream_id: str, from_version: int) -> list[Envelope]:
        found = await self.own.read_stream(stream_id, from_version)
        if found or self.others is None:
            return found
        return await self.others.read_stream(stream_id, from_version)
