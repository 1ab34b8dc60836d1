"""Revocation on the NATS server: the devices account JWT is re-issued with the keys of every
rejected or decommissioned device and pushed to the server, which closes their connections and
refuses their JWTs from then on.

The set is computed from the event log each time (not kept in memory), so replicas never push a
set that forgets another replica's revocation for longer than one period; pushes of one process
are serialised. The periodic push also restores revocations a restarted server (memory resolver)
has forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from nats.aio.client import Client as NatsClient

from sdv_events.aio import sleep_or_stop
from sdv_events.auth import ClaimsUpdateFailed, DeviceAuthority, push_account_jwt
from sdv_registry.adapters.admission_log import AdmissionLog

log = structlog.get_logger("sdv.registry.revocations")


class Revocations:
    def __init__(self, authority: DeviceAuthority, system_nc: NatsClient, admission: AdmissionLog, *,
                 credential_ttl_s: float, clock: Callable[[], datetime], period_s: float = 30.0
                 ) -> None:
        self.authority = authority
        self.system_nc = system_nc
        self.admission = admission
        self.credential_ttl_s = credential_ttl_s
        self.clock = clock
        self.period_s = period_s
        self.pushes = 0
        self._lock = asyncio.Lock()

    async def push(self) -> int:
        """Push the current set; returns how many keys it revokes. Raises `ClaimsUpdateFailed`."""
        async with self._lock:
            # Revocations older than one credential lifetime only cover expired JWTs: drop them,
            # so the account JWT does not grow with every device ever removed. One minute of
            # slack covers clock skew between the registry and the servers.
            horizon = self.clock() - timedelta(seconds=self.credential_ttl_s + 60)
            revoked = await self.admission.revoked_keys(since=horizon)
            await push_account_jwt(self.system_nc, self.authority.devices_account,
                                   self.authority.devices_account_jwt(revoked))
            self.pushes += 1
            return len(revoked)

    async def push_logged(self) -> None:
        try:
            count = await self.push()
            log.debug("revocations_pushed", revoked=count)
        except (ClaimsUpdateFailed, OSError) as exc:
            log.warning("revocations_push_failed", error=str(exc))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.push_logged()
            await sleep_or_stop(stop, self.period_s)
