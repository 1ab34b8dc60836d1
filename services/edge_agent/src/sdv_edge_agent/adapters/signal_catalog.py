"""The signal catalogue the vehicle's databroker serves, read from its metadata with kuksa-client
(kuksa.val.v2 `ListMetadata` of `Vehicle`; v1 `Get` of its metadata when the databroker has no
v2): every path with its entry type (sensor, actuator, attribute) and datatype.

Reported to the cloud as the fact `agent.SignalCatalogReported` when it changes (and once a day,
so the bus's retention never loses it), and named in the capabilities by its digest: planning
leaves out vehicles whose databroker lacks a signal an app declares.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_edge_agent.adapters.kuksa import Databroker
from sdv_events.schemas.agent import SignalCatalogReported
from sdv_events.signal_catalog import MAX_SIGNALS, CatalogEntry, catalog_digest

log = structlog.get_logger("sdv.agent.catalog")
ROOT = "Vehicle"
_DAY_S = 86_400


def _name(enum_name: str, prefix: str) -> str:
    """`ENTRY_TYPE_ACTUATOR` → `actuator`, `DATA_TYPE_STRING_ARRAY` → `string[]`."""
    text = enum_name.removeprefix(prefix).lower()
    return text.removesuffix("_array") + "[]" if text.endswith("_array") else text


def _entries(items: list[tuple[str, str, str]]) -> dict[str, CatalogEntry]:
    return {path: CatalogEntry(_name(kind, "ENTRY_TYPE_"), _name(datatype, "DATA_TYPE_"))
            for path, kind, datatype in items[:MAX_SIGNALS] if path}


async def _v2(client: Any, timeout_s: float) -> dict[str, CatalogEntry]:
    from kuksa.val.v2 import types_pb2, val_pb2

    request = val_pb2.ListMetadataRequest(root=ROOT)
    reply = await client.client_stub_v2.ListMetadata(request, timeout=timeout_s)
    return _entries([(m.path, types_pb2.EntryType.Name(m.entry_type), types_pb2.DataType.Name(m.data_type))
                     for m in reply.metadata])


async def _v1(client: Any, timeout_s: float) -> dict[str, CatalogEntry]:
    metadata = await client.get_metadata([ROOT], timeout=timeout_s)
    return _entries([(path, f"ENTRY_TYPE_{m.entry_type.name}", f"DATA_TYPE_{m.data_type.name}")
                     for path, m in metadata.items()])


async def fetch_catalog(host: str, port: int, timeout_s: float = 5.0) -> dict[str, CatalogEntry]:
    """The databroker's catalogue; raises when it cannot be read."""
    import grpc
    from kuksa_client.grpc.aio import VSSClient

    async with VSSClient(host, port, ensure_startup_connection=False) as client:
        try:
            return await _v2(client, timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        return await _v1(client, timeout_s)


class CatalogReporter:
    """Reads the catalogue while a databroker answers; emits the fact when it changed."""

    def __init__(self, databroker: Databroker, device_id: str,
                 emit: Callable[[SignalCatalogReported, int], bool]) -> None:
        self.databroker = databroker
        self.device_id = device_id
        self.emit = emit
        self.digest: str | None = None
        self.signals = 0

    async def refresh(self) -> None:
        if self.databroker.found is None:
            return
        host, port = self.databroker.address
        try:
            signals = await fetch_catalog(host, port)
        except Exception as exc:
            reraise_if_cancelling(exc)
            log.warning("signal_catalog_unreadable", address=f"{host}:{port}",
                        reason=f"{type(exc).__name__}: {exc}")
            return
        digest = catalog_digest(signals)
        if digest != self.digest:
            log.info("signal_catalog", signals=len(signals), digest=digest[:12])
        self.digest, self.signals = digest, len(signals)
        fact = SignalCatalogReported(device_id=self.device_id, digest=digest,
                                     server=self.databroker.found or "", signals=signals)
        # One fact per catalogue and day: a repeat within the day is dropped by the outbox.
        self.emit(fact, int(time.time() // _DAY_S))

    async def watch(self, interval_s: float = 30.0) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)
