"""Operator use cases: add (record the operator, sign its JWT), revoke (record, then push the
operators account's revocations before the reply, so the operator is off the bus by the time
the admin hears "done"), list — folded from the registry's own event log, where the operator
streams live (a handful of streams: no read model needed).

Only an admin's credentials can reach these commands (`sdv_events.auth.roles`); the events
record which admin, as the server vouched for it (`sdv_events.bus.actor`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from sdv_events.auth import BOOTSTRAP_ADMIN, ClaimsUpdateFailed, DeviceAuthority
from sdv_events.bus import NotFound, ServiceUnavailable
from sdv_events.commands import handle_command, raise_if_refused
from sdv_events.envelope import Envelope, Metadata
from sdv_events.idempotency import IdempotencyKey
from sdv_events.ids import stream_id
from sdv_events.schemas.operators import (
    OperatorAdded,
    OperatorCredentials,
    OperatorRevoked,
    OperatorRole,
    OperatorView,
)
from sdv_events.store import EventStore
from sdv_registry.adapters.revocations import Revocations
from sdv_registry.domain.operator import AddOperator, OperatorCommand, RevokeOperator, operator_decider

log = structlog.get_logger("sdv.registry.operators")
CATEGORY = "operator"


def operator_stream(name: str) -> str:
    return stream_id(CATEGORY, name)


def operator_views(history: Iterable[Envelope]) -> dict[str, OperatorView]:
    """Each operator as its latest events say, by name (events in commit order)."""
    views: dict[str, OperatorView] = {}
    for e in history:
        match e.data:
            case OperatorAdded(name=name, role=role, public_key=key):
                views[name] = OperatorView(name=name, role=role, status="active", public_key=key,
                                           added_at=e.occurred_at, added_by=e.actor)
            case OperatorRevoked(name=name, reason=reason) if name in views:
                views[name] = OperatorView(
                    name=name, role=views[name].role, status="revoked",
                    public_key=views[name].public_key, added_at=views[name].added_at,
                    added_by=views[name].added_by, revoked_at=e.occurred_at, revoked_by=e.actor,
                    reason=reason)
    return views


async def revoked_operator_keys(store: EventStore) -> dict[str, int]:
    """Public key → unix second of its revocation, for the operators account JWT. Operator JWTs
    do not expire, so every revocation stays (there are few)."""
    return {e.data.public_key: int(e.occurred_at.timestamp())
            async for e in store.read_category(CATEGORY) if isinstance(e.data, OperatorRevoked)}


@dataclass
class Operators:
    store: EventStore
    authority: DeviceAuthority | None
    revocations: Revocations | None

    def _signer(self) -> DeviceAuthority:
        if self.authority is None or self.authority.operators is None:
            raise ServiceUnavailable(
                "this registry has no operators signing key (SDV_TRUST_FILE unset, or written "
                "before operators had an account: restart `sdv up` or re-run `sdv deploy init`)",
                details={"reason": "no_operators_key"})
        return self.authority

    async def _run(self, name: str, command: OperatorCommand, metadata: Metadata,
                   key: IdempotencyKey | None) -> None:
        raise_if_refused(await handle_command(self.store, operator_decider, operator_stream(name),
                                              command, key=key, metadata=metadata))

    async def add(self, name: str, role: OperatorRole, public_key: str, metadata: Metadata,
                  key: IdempotencyKey | None = None) -> OperatorCredentials:
        signer = self._signer()
        await self._run(name, AddOperator(name, role, public_key, frozenset({BOOTSTRAP_ADMIN})),
                        metadata, key)
        view = await self.get(name)
        jwt = signer.operator_jwt(view.public_key, name, view.role)
        assert signer.operators is not None  # _signer checked it
        log.info("operator_added", operator=name, role=view.role, by=metadata.actor)
        return OperatorCredentials(operator=view, jwt=jwt, account=signer.operators.account)

    async def revoke(self, name: str, reason: str, metadata: Metadata,
                     key: IdempotencyKey | None = None) -> OperatorView:
        await self._run(name, RevokeOperator(name, reason), metadata, key)
        if self.revocations is not None:
            try:
                await self.revocations.push()
            except (ClaimsUpdateFailed, OSError) as exc:
                log.error("operator_revocation_push_failed", operator=name, error=str(exc))
                raise ServiceUnavailable(
                    f"operator {name!r} is revoked in the record, but the NATS server did not take "
                    f"the revocation yet ({exc}); it is pushed again within "
                    f"{self.revocations.period_s:.0f} s — or run the revoke again",
                    details={"reason": "push_failed"}) from None
        log.info("operator_revoked", operator=name, by=metadata.actor)
        return await self.get(name)

    async def get(self, name: str) -> OperatorView:
        views = operator_views(await self.store.read_stream(operator_stream(name)))
        if name not in views:
            raise NotFound(f"no operator {name!r}")
        return views[name]

    async def list(self, include_revoked: bool) -> list[OperatorView]:
        views = operator_views([e async for e in self.store.read_category(CATEGORY)])
        return sorted((v for v in views.values() if include_revoked or v.status == "active"),
                      key=lambda v: v.name)
