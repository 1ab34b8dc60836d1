"""The signal catalogues devices' databrokers serve, by digest: a device names its catalogue in
its capabilities (`kuksa.catalog`) and sends it as its fact `agent.SignalCatalogReported` on
its own subject (which only that device may publish on). A catalogue is read back as the last
such message of a device that names the digest, checked against the digest, and kept: devices of
one model share one catalogue, so a fleet-wide plan reads a handful.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from sdv_events.codec import decode_envelope
from sdv_events.errors import SdvError
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.schemas.agent import SignalCatalogReported
from sdv_events.signal_catalog import catalog_digest
from sdv_events.subjects import agent_fact_subject
from sdv_orchestrator.domain.planning import DeviceFacts

log = structlog.get_logger("sdv.orchestrator.catalogs")
FACT = "agent.SignalCatalogReported.v1"
TRIES = 5  # devices asked per digest before the catalogue counts as unknown
KEPT = 64


class SignalCatalogs:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._kept: OrderedDict[str, Mapping[str, str]] = OrderedDict()

    async def resolve(self, devices: Sequence[DeviceFacts]) -> list[DeviceFacts]:
        """The devices with the catalogue their digest names filled in (left unknown when no
        device's last report carries it: planning then checks no signal on them)."""
        holders: dict[str, list[str]] = {}
        for device in devices:
            if device.catalog_digest is not None:
                holders.setdefault(device.catalog_digest, []).append(device.device_id)
        found = {digest: await self.lookup(digest, ids) for digest, ids in holders.items()}
        return [replace(d, catalog=found.get(d.catalog_digest)) if d.catalog_digest else d
                for d in devices]

    async def lookup(self, digest: str, device_ids: Sequence[str]) -> Mapping[str, str] | None:
        if digest in self._kept:
            self._kept.move_to_end(digest)
            return self._kept[digest]
        for device_id in device_ids[:TRIES]:
            try:
                msg = await self.js.get_last_msg(EVENTS_STREAM, agent_fact_subject(device_id, FACT))
                fact = decode_envelope(msg.data or b"").data
            except NotFoundError:
                continue
            except SdvError as exc:
                log.warning("signal_catalog_undecodable", device_id=device_id, reason=str(exc))
                continue
            if (isinstance(fact, SignalCatalogReported) and fact.device_id == device_id
                    and fact.digest == digest and catalog_digest(fact.signals) == digest):
                kinds = {path: entry.kind for path, entry in fact.signals.items()}
                self._kept[digest] = kinds
                while len(self._kept) > KEPT:
                    self._kept.popitem(last=False)
                return kinds
        log.info("signal_catalog_unknown", digest=digest[:12], devices=len(device_ids))
        return None
