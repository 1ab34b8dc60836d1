"""Revocation on the NATS server: the devices account JWT is re-issued with the keys of every
rejected or decommissioned device, the operators account JWT with the keys of every revoked
operator, and both are pushed to the server, which closes their connections and refuses their
JWTs from then on.

The set is computed from the event log each time (not kept in memory), so replicas never push a
set that forgets another replica's revocation for longer than one period; pushes of one process
are serialised. The periodic push also restores revocations a restarted server (memory resolver)
has forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog
from nats.aio.client import Client as NatsClient

from sdv_events.aio import wait_any
from sdv_events.auth import ClaimsUpdateFailed, DeviceAuthority, push_account_jwt
from sdv_registry.adapters.admission_log import AdmissionLog

log = structlog.get_logger("sdv.registry.revocations")


class Revocations:
    def __init__(self, authority: DeviceAuthority, system_nc: NatsClient, admission: AdmissionLog, *,
                 credential_ttl_s: float, clock: Callable[[], datetime], period_s: float = 30.0,
                 operator_keys: Callable[[], Awaitable[dict[str, int]]] | None = None) -> None:
        self.authority = authority
        self.operator_keys = operator_keys
        self.system_nc = system_nc
        self.admission = admission
        self.credential_ttl_s = credential_ttl_s
        self.clock = clock
        self.period_s = period_s
        self.pushes = 0
        self._lock = asyncio.Lock()
        self._again = asyncio.Event()

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
            operators = self.authority.operators
            if operators is not None and self.operator_keys is not None:
                revoked_operators = await self.operator_keys()
                await push_account_jwt(self.system_nc, operators.account,
                                       self.authority.operators_account_jwt(revoked_operators))
                revoked |= revoked_operators
            self.pushes += 1
            return len(revoked)

    async def push_logged(self) -> None:
        try:
            count = await self.push()
            log.debug("revocations_pushed", revoked=count)
        except (ClaimsUpdateFailed, OSError) as exc:
            log.warning("revocations_push_failed", error=str(exc))

    def push_soon(self) -> None:
        """Push at once rather than at the end of the period: e.g. when the system connection
        came back, which may be to a restarted server that forgot every revocation."""
        self._again.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._again.clear()
            await self.push_logged()
            await wait_any(stop, self._again, timeout=self.period_s)
