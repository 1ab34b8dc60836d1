"""Registry use cases: announce (admission and credentials) and renewal, operator commands (preauthorize,
accept, reject, decommission, set labels), queries (get by folding the stream; page, count and
resolve from the inventory read model) and presence transitions.

Every change runs through the shared command runner over the device decider. Revoking devices
(reject, decommission) re-pushes the account's revocation list before the reply, so the device
is off the bus by the time the operator hears "done".
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

import structlog

from sdv_events.auth import InvalidPublicKey, Role, check_public_key
from sdv_events.bus import Forbidden, InvalidRequest, NotFound
from sdv_events.commands import handle_command, load, raise_if_refused
from sdv_events.enrolment import (
    InvalidSignature,
    Purpose,
    issue_nonce,
    key_fingerprint,
    nonce_is_valid,
    verify_announce,
)
from sdv_events.envelope import Metadata
from sdv_events.idempotency import IdempotencyKey
from sdv_events.ids import stream_id
from sdv_events.schemas.devices import (
    Announce,
    AnnounceReply,
    DeviceCounts,
    DeviceStatus,
    DeviceView,
    RegistryStats,
)
from sdv_events.selectors import InvalidSelector, parse_selector
from sdv_events.store import EventStore
from sdv_registry.adapters.inventory_view import InventoryView
from sdv_registry.adapters.revocations import Revocations
from sdv_registry.credentials import CredentialIssuer
from sdv_registry.domain.device import (
    Accept,
    AnnounceDevice,
    ChangeLabels,
    Decommission,
    DeviceCommand,
    Preauthorize,
    Reject,
    device_decider,
)
from sdv_registry.heartbeats import PresenceMonitor
from sdv_registry.selector_sql import Filters

log = structlog.get_logger("sdv.registry")


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def device_stream(device_id: str) -> str:
    return stream_id("device", device_id)


def filters(selector: str, status: DeviceStatus | None = None, online: bool | None = None) -> Filters:
    try:
        return Filters(parse_selector(selector), status, online)
    except InvalidSelector as err:
        raise InvalidRequest(err.message, details={
            "selector": err.selector, "position": str(err.position), "problem": err.problem,
        }) from None


@dataclass
class Registry:
    store: EventStore
    inventory: InventoryView
    credentials: CredentialIssuer | None = None
    revocations: Revocations | None = None
    fleet_token_sha256: str | None = None
    pending_retry_s: float = 10.0
    presence: PresenceMonitor | None = None
    # Keys the announce nonces (replicas must share it: app.py derives it from the trust file).
    nonce_secret: bytes = field(default_factory=lambda: os.urandom(32))

    async def run(self, device_id: str, command: DeviceCommand, metadata: Metadata = Metadata(),
                  key: IdempotencyKey | None = None) -> None:
        raise_if_refused(await handle_command(self.store, device_decider, device_stream(device_id),
                                              command, key=key, metadata=metadata))

    # --- agents -------------------------------------------------------------------------------

    async def announce(self, request: Announce, subject_device_id: str,
                       metadata: Metadata = Metadata(), *, purpose: Purpose = "announce") -> AnnounceReply:
        """`purpose="renew"`: the request came on `sdv.renew.<id>`, which only that device's own
        JWT may publish on; it renews an accepted device with its registered key, nothing else."""
        did = request.device_id
        if did != subject_device_id:
            raise InvalidRequest(f"announced on the subject of {subject_device_id!r} but the body "
                                 f"names {did!r}", details={"path": "$.device_id"})
        try:
            check_public_key(request.public_key, Role.USER)
        except InvalidPublicKey as err:
            raise InvalidRequest(str(err), details={"path": "$.public_key"}) from None
        if request.nonce is None or request.signature is None:
            return AnnounceReply(device_id=did, status="challenge",
                                 nonce=issue_nonce(self.nonce_secret, did),
                                 message="sign this announce over the nonce with the device's key")
        if not nonce_is_valid(self.nonce_secret, did, request.nonce):
            raise Forbidden("the nonce is stale or not the registry's: announce again for a new one",
                            details={"reason": "stale_nonce"})
        try:
            verify_announce(request, purpose)
        except InvalidSignature as err:
            raise Forbidden(str(err), details={"reason": "bad_signature"}) from None
        if purpose == "renew" and (refused := await self._renewal_refused(request)) is not None:
            return refused
        token_hash = sha256_hex(request.token) if request.token else None
        fleet_ok = bool(token_hash and self.fleet_token_sha256
                        and hmac.compare_digest(token_hash, self.fleet_token_sha256))
        command = AnnounceDevice(device_id=did, public_key=request.public_key,
                                 capabilities=request.capabilities, token_sha256=token_hash,
                                 fleet_token_valid=fleet_ok)
        await self.run(did, command, metadata)
        state, _ = await load(self.store, device_decider, device_stream(did))
        assert state.status is not None
        if state.refuses(request.public_key) and request.public_key != state.public_key:
            return AnnounceReply(device_id=did, status="rejected",
                                 message="this key was rejected or decommissioned for this device")
        if state.status != "accepted":
            messages = {"pending": "waiting for an operator to accept this device",
                        "rejected": "an operator rejected this device",
                        "decommissioned": "this device was decommissioned"}
            retry = self.pending_retry_s if state.status == "pending" else 0.0
            return AnnounceReply(device_id=did, status=state.status, retry_after_s=retry,
                                 message=messages.get(state.status, ""))
        if self.credentials is None:
            return AnnounceReply(device_id=did, status="accepted",
                                 message="accepted; this registry issues no NATS credentials")
        return AnnounceReply(device_id=did, status="accepted",
                             credentials=self.credentials.issue(did, request.public_key))

    async def _renewal_refused(self, request: Announce) -> AnnounceReply | None:
        state, _ = await load(self.store, device_decider, device_stream(request.device_id))
        if state.status is None:
            raise Forbidden(f"device {request.device_id!r} is not known: enrol with an announce",
                            details={"reason": "unknown_device"})
        if state.status == "accepted" and state.public_key == request.public_key:
            return None
        return AnnounceReply(device_id=request.device_id, status=state.status,
                             message="only an accepted device renews, with its registered key")

    # --- operators ------------------------------------------------------------------------------

    async def preauthorize(self, device_id: str, token: str, labels: dict[str, str],
                           metadata: Metadata = Metadata(), key: IdempotencyKey | None = None) -> DeviceView:
        await self.run(device_id, Preauthorize(device_id, sha256_hex(token), labels), metadata, key)
        return await self.get(device_id)

    async def accept(self, device_id: str, reason: str, metadata: Metadata = Metadata(),
                     key: IdempotencyKey | None = None, key_fingerprint: str | None = None
                     ) -> DeviceView:
        before = await self.get(device_id) if self.revocations is not None else None
        await self.run(device_id, Accept(device_id, reason, key_fingerprint), metadata, key)
        if before is not None and before.status == "rejected":
            await self._push_revocations()  # a device accepted again leaves the revocation list
        return await self.get(device_id)

    async def reject(self, device_id: str, reason: str, metadata: Metadata = Metadata(),
                     key: IdempotencyKey | None = None) -> DeviceView:
        await self.run(device_id, Reject(device_id, reason), metadata, key)
        await self._push_revocations()
        return await self.get(device_id)

    async def decommission(self, device_id: str, reason: str, metadata: Metadata = Metadata(),
                           key: IdempotencyKey | None = None) -> DeviceView:
        await self.run(device_id, Decommission(device_id, reason), metadata, key)
        await self._push_revocations()
        return await self.get(device_id)

    async def set_labels(self, device_id: str, labels: dict[str, str], remove: list[str],
                         metadata: Metadata = Metadata(), key: IdempotencyKey | None = None) -> DeviceView:
        await self.run(device_id, ChangeLabels(device_id, labels, remove), metadata, key)
        return await self.get(device_id)

    async def _push_revocations(self) -> None:
        if self.revocations is not None:
            await self.revocations.push_logged()

    # --- queries --------------------------------------------------------------------------------

    async def get(self, device_id: str) -> DeviceView:
        """Folded from the device's stream: a reply right after a command already shows it."""
        history = await self.store.read_stream(device_stream(device_id))
        if not history:
            raise NotFound(f"device {device_id!r} is not known")
        state = device_decider.fold(e.data for e in history)
        assert state.status is not None
        return DeviceView(
            device_id=device_id, status=state.status, public_key=state.public_key,
            key_fingerprint=key_fingerprint(state.public_key) if state.public_key else None,
            capabilities=state.capabilities, labels=dict(state.labels), online=state.online,
            last_seen_at=state.last_seen_at, admitted_by=state.admitted_by,
            created_at=history[0].occurred_at, updated_at=history[-1].occurred_at,
            version=history[-1].version,
        )

    async def page(self, selector: str, status: DeviceStatus | None, online: bool | None,
                   limit: int, offset: int) -> tuple[list[DeviceView], int]:
        return await self.inventory.page(self.store.pool, filters(selector, status, online),
                                         limit=limit, offset=offset)

    async def count(self, selector: str, status: DeviceStatus | None, online: bool | None) -> DeviceCounts:
        return await self.inventory.count(self.store.pool, filters(selector, status, online))

    async def resolve(self, selector: str, online_only: bool) -> list[str]:
        return await self.inventory.resolve(
            self.store.pool, filters(selector, "accepted", True if online_only else None))

    def stats(self) -> RegistryStats:
        presence, revocations = self.presence, self.revocations
        return RegistryStats(
            heartbeats=presence.heartbeats if presence else 0,
            presence_transitions=presence.transitions if presence else 0,
            tracked_online=len(presence.tracker.last_heard) if presence else 0,
            revocation_pushes=revocations.pushes if revocations else 0,
        )
