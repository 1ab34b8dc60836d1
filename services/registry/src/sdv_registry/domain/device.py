"""The device aggregate (stream `device-<device_id>`): admission, capabilities, labels, presence.

    (unknown) ──announce──▶ pending ──accept──▶ accepted ──decommission──▶ decommissioned
        │                      └──reject──▶ rejected ──accept──▶ accepted     (its key: final)
        │                                      └──announce with another key──▶ pending
        └──preauthorize──▶ preauthorized ──announce with its token──▶ accepted

A device is known by its own public nkey (every announce is signed by the key it names; the
application checks that before this decider runs). The key announced is the one an operator
accepts — and, when the operator names its fingerprint, only that key — and an announce with
another key is refused while the device is pending or accepted: a second party cannot swap its
key in or rewrite the capabilities. Announcing again with the same key is how an agent renews
its credentials; it changes state only when the capabilities changed.

Rejecting or decommissioning a device refuses its key for good and frees the id: another key
(the real device after a squatter was rejected, a reinstalled one) announces it anew as pending,
without the fleet token's shortcut, and waits for an operator. The refused keys stay refused.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import msgspec

from sdv_events.decider import Decider
from sdv_events.errors import DomainError
from sdv_events.fingerprint import key_fingerprint
from sdv_events.labels import check_key, check_labels
from sdv_events.schemas.devices import (
    AdmittedBy,
    Capabilities,
    DeviceAccepted,
    DeviceAnnounced,
    DeviceCameOnline,
    DeviceCapabilitiesUpdated,
    DeviceDecommissioned,
    DeviceLabelsChanged,
    DevicePreauthorized,
    DeviceRejected,
    DeviceStatus,
    DeviceWentOffline,
)

DeviceEvent = (
    DevicePreauthorized | DeviceAnnounced | DeviceAccepted | DeviceRejected
    | DeviceCapabilitiesUpdated | DeviceLabelsChanged | DeviceCameOnline | DeviceWentOffline
    | DeviceDecommissioned
)


# --- commands (what the application asks of one device) ----------------------------------


class AnnounceDevice(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    public_key: str
    capabilities: Capabilities
    token_sha256: str | None = None  # sha256 of the token the device presented
    fleet_token_valid: bool = False  # the application checked it against the fleet token


class Preauthorize(msgspec.Struct, frozen=True):
    device_id: str
    token_sha256: str
    labels: dict[str, str] = {}


class Accept(msgspec.Struct, frozen=True):
    device_id: str
    reason: str = ""
    key_fingerprint: str | None = None  # accept only while the device announces this key


class Reject(msgspec.Struct, frozen=True):
    device_id: str
    reason: str = ""


class Decommission(msgspec.Struct, frozen=True):
    device_id: str
    reason: str = ""


class ChangeLabels(msgspec.Struct, frozen=True):
    device_id: str
    set: dict[str, str] = {}
    remove: list[str] = []


class MarkOnline(msgspec.Struct, frozen=True):
    device_id: str
    seen_at: datetime


class MarkOffline(msgspec.Struct, frozen=True):
    device_id: str
    last_seen_at: datetime
    silence_s: float


DeviceCommand = (
    AnnounceDevice | Preauthorize | Accept | Reject | Decommission | ChangeLabels | MarkOnline
    | MarkOffline
)


@dataclass(frozen=True)
class DeviceState:
    status: DeviceStatus | None = None  # None: never heard of
    public_key: str | None = None
    capabilities: Capabilities | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    token_sha256: str | None = None
    admitted_by: AdmittedBy | None = None
    online: bool = False
    last_seen_at: datetime | None = None
    refused_keys: frozenset[str] = frozenset()  # rejected or decommissioned, never admitted again

    def refuses(self, key: str) -> bool:
        return key in self.refused_keys


def _known(state: DeviceState, device_id: str) -> DeviceStatus:
    if state.status is None:
        raise DomainError(f"device {device_id!r} is not known", code="not_found")
    if state.status == "decommissioned":
        raise DomainError(f"device {device_id!r} is decommissioned", code="conflict")
    return state.status


def _announce(cmd: AnnounceDevice, state: DeviceState) -> list[DeviceEvent]:
    did = cmd.device_id
    if state.status in (None, "preauthorized"):
        events: list[DeviceEvent] = [DeviceAnnounced(did, cmd.public_key, cmd.capabilities)]
        if state.status == "preauthorized":
            assert state.token_sha256 is not None
            token_ok = cmd.token_sha256 is not None and hmac.compare_digest(
                cmd.token_sha256, state.token_sha256)
            if token_ok:
                return [*events, DeviceAccepted(did, cmd.public_key, "preauthorized")]
            if not cmd.fleet_token_valid:
                raise DomainError(
                    f"device {did!r} is pre-authorised: announce with its token", code="forbidden")
        if cmd.fleet_token_valid:
            events.append(DeviceAccepted(did, cmd.public_key, "fleet_token"))
        return events
    if state.refuses(cmd.public_key):
        return []  # the reply tells the device; nothing about it changes
    if state.status in ("rejected", "decommissioned"):
        # The refused key is gone; another key starts over and waits for an operator.
        return [DeviceAnnounced(did, cmd.public_key, cmd.capabilities)]
    if cmd.public_key != state.public_key:
        raise DomainError(
            f"device {did!r} is {state.status} with another public key; an operator must reject "
            "or decommission it before a new key can be announced", code="conflict")
    if cmd.capabilities != state.capabilities:
        return [DeviceCapabilitiesUpdated(did, cmd.capabilities)]
    return []


def decide(command: DeviceCommand, state: DeviceState) -> Sequence[DeviceEvent]:
    match command:
        case AnnounceDevice():
            return _announce(command, state)
        case Preauthorize(device_id=did, token_sha256=token, labels=labels):
            if state.status not in (None, "preauthorized"):
                raise DomainError(
                    f"device {did!r} already announced itself ({state.status}): accept or reject it",
                    code="conflict")
            if state.token_sha256 == token and state.labels == labels:
                return []
            return [DevicePreauthorized(did, token, check_labels(labels))]
        case Accept(device_id=did, reason=reason, key_fingerprint=fingerprint):
            status = _known(state, did)
            if state.public_key is None:
                raise DomainError(f"device {did!r} has not announced itself yet", code="conflict")
            if fingerprint is not None and fingerprint != key_fingerprint(state.public_key):
                raise DomainError(
                    f"device {did!r} now announces key {key_fingerprint(state.public_key)}, not "
                    f"{fingerprint}: look at it again before accepting", code="conflict")
            if status == "accepted":
                return []
            return [DeviceAccepted(did, state.public_key, "operator", reason)]
        case Reject(device_id=did, reason=reason):
            status = _known(state, did)
            return [] if status == "rejected" else [DeviceRejected(did, state.public_key, reason)]
        case Decommission(device_id=did, reason=reason):
            if state.status is None:
                raise DomainError(f"device {did!r} is not known", code="not_found")
            if state.status == "decommissioned":
                return []
            return [DeviceDecommissioned(did, state.public_key, reason)]
        case ChangeLabels(device_id=did, set=to_set, remove=to_remove):
            to_set, to_remove = check_labels(to_set), [check_key(k) for k in to_remove]
            _known(state, did)
            labels = {**state.labels, **to_set}
            for key in to_remove:
                labels.pop(key, None)
            return [] if labels == state.labels else [DeviceLabelsChanged(did, labels)]
        case MarkOnline(device_id=did, seen_at=seen_at):
            if state.status != "accepted" or state.online:
                return []
            return [DeviceCameOnline(did, seen_at)]
        case MarkOffline(device_id=did, last_seen_at=last_seen, silence_s=silence):
            return [DeviceWentOffline(did, last_seen, silence)] if state.online else []
    raise DomainError(f"unknown command {type(command).__name__}", code="invalid_request")


def evolve(state: DeviceState, event: DeviceEvent) -> DeviceState:
    match event:
        case DevicePreauthorized(token_sha256=token, labels=labels):
            return replace(state, status="preauthorized", token_sha256=token, labels=labels)
        case DeviceAnnounced(public_key=key, capabilities=caps):
            return replace(state, status="pending", public_key=key, capabilities=caps)
        case DeviceAccepted(public_key=key, admitted_by=by):
            return replace(state, status="accepted", public_key=key, admitted_by=by,
                           refused_keys=state.refused_keys - {key})
        case DeviceRejected(public_key=key):
            refused = state.refused_keys | ({key} if key else set())
            return replace(state, status="rejected", admitted_by=None, refused_keys=refused)
        case DeviceCapabilitiesUpdated(capabilities=caps):
            return replace(state, capabilities=caps)
        case DeviceLabelsChanged(labels=labels):
            return replace(state, labels=labels)
        case DeviceCameOnline(seen_at=seen_at):
            return replace(state, online=True, last_seen_at=seen_at)
        case DeviceWentOffline(last_seen_at=last_seen):
            return replace(state, online=False, last_seen_at=last_seen)
        case DeviceDecommissioned(public_key=key):
            refused = state.refused_keys | ({key} if key else set())
            return replace(state, status="decommissioned", admitted_by=None, refused_keys=refused)
    return state


device_decider: Decider[DeviceCommand, DeviceEvent, DeviceState] = Decider(DeviceState(), decide, evolve)
