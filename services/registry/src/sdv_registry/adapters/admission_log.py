"""Questions answered from the registry's own event log, not the read model, where a lagging
answer would be wrong: which device keys are revoked now, which devices are online now.

Each is "the latest event of these types per device stream", read with one query over the
`events` table (a committed append is visible at once; the projection may still be behind).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from sdv_events.codec import decode_body
from sdv_events.registry import type_name
from sdv_events.schemas.devices import DeviceCameOnline, DeviceDecommissioned, DeviceRejected

_ADMISSION = [type_name(f"registry.Device{t}", 1) for t in ("Accepted", "Rejected", "Decommissioned")]
_PRESENCE = [type_name(f"registry.Device{t}", 1) for t in ("CameOnline", "WentOffline")]


class AdmissionLog:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self._sql = (
            f"SELECT DISTINCT ON (stream_id) stream_id, type, data, occurred_at FROM {schema}.events "
            "WHERE stream_id LIKE 'device-%' AND type = ANY($1::text[]) "
            "ORDER BY stream_id, version DESC")

    async def _latest(self, types: list[str]) -> list[tuple[object, datetime]]:
        rows = await self.pool.fetch(self._sql, types)
        return [(decode_body(r["type"], bytes(r["data"])), r["occurred_at"]) for r in rows]

    async def revoked_keys(self, since: datetime) -> dict[str, int]:
        """Public key → unix second of the revocation, for devices now rejected or decommissioned
        (revoked after `since`: older revocations cover only JWTs that have expired anyway)."""
        out: dict[str, int] = {}
        for body, at in await self._latest(_ADMISSION):
            if isinstance(body, DeviceRejected | DeviceDecommissioned) and body.public_key and at > since:
                out[body.public_key] = int(at.timestamp())
        return out

    async def online_devices(self) -> list[str]:
        return [body.device_id for body, _ in await self._latest(_PRESENCE)
                if isinstance(body, DeviceCameOnline)]
