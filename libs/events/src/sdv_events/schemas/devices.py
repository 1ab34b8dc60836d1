"""Device events (stream `device-<device_id>`, written by the registry), the announce exchange
agents use (`sdv.announce.<device_id>`), and registry commands and queries
(`sdv.cmd.registry.<name>`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from sdv_events.registry import event

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DeviceId = Annotated[str, msgspec.Meta(pattern=DEVICE_ID_PATTERN)]
# A public user nkey: 'U' + 55 base32 characters (the checksum is checked by the registry).
UserPublicKey = Annotated[str, msgspec.Meta(pattern=r"^U[A-Z2-7]{55}$")]
Text = Annotated[str, msgspec.Meta(max_length=256)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Labels = Annotated[dict[str, str], msgspec.Meta(max_length=64)]

DeviceStatus = Literal["preauthorized", "pending", "accepted", "rejected", "decommissioned"]
# What an announce is answered with: the device's status, or a nonce to sign (sdv_events.enrolment).
AnnounceStatus = Literal["preauthorized", "pending", "accepted", "rejected", "decommissioned",
                         "challenge"]
RuntimeKind = Literal["docker", "native"]
# How an accepted device got in: an operator's accept, its own pre-authorisation, the fleet token.
AdmittedBy = Literal["operator", "preauthorized", "fleet_token"]


Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class Kuksa(msgspec.Struct, frozen=True, omit_defaults=True):
    present: bool = False
    vss_version: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    address: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    # The signal catalogue the databroker serves, by the sha256 of its canonical form
    # (`sdv_events.signal_catalog`); the catalogue itself travels once per change as the agent's
    # fact `agent.SignalCatalogReported`, so capabilities stay small whatever the catalogue holds.
    catalog: Sha256Hex | None = None
    signals: Annotated[int, msgspec.Meta(ge=0)] = 0


class Mqtt(msgspec.Struct, frozen=True, omit_defaults=True):
    """The vehicle's MQTT broker (Velocitas apps publish and subscribe through it)."""

    present: bool = False
    address: Annotated[str, msgspec.Meta(max_length=256)] | None = None  # mqtt://host:port


class Capabilities(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a device says it is and can run."""

    hardware_type: ShortText  # jetson-orin | linux-generic | automotive-prototype | …
    arch: ShortText  # x86_64, aarch64, …
    runtimes: Annotated[list[RuntimeKind], msgspec.Meta(min_length=1, max_length=2)]
    python_version: ShortText
    agent_version: ShortText
    memory_mb: Annotated[int, msgspec.Meta(ge=0)]
    storage_mb: Annotated[int, msgspec.Meta(ge=0)]
    gpu: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    kuksa: Kuksa = Kuksa()
    mqtt: Mqtt = Mqtt()


# --- events -------------------------------------------------------------------------------


@event("registry.DevicePreauthorized")
class DevicePreauthorized(msgspec.Struct, frozen=True):
    device_id: str
    token_sha256: str
    labels: dict[str, str] = {}


@event("registry.DeviceAnnounced")
class DeviceAnnounced(msgspec.Struct, frozen=True):
    device_id: str
    public_key: str
    capabilities: Capabilities


@event("registry.DeviceAccepted")
class DeviceAccepted(msgspec.Struct, frozen=True):
    device_id: str
    public_key: str
    admitted_by: AdmittedBy
    reason: str = ""


@event("registry.DeviceRejected")
class DeviceRejected(msgspec.Struct, frozen=True):
    device_id: str
    public_key: str | None  # None when it never announced (a pre-authorisation withdrawn)
    reason: str = ""


@event("registry.DeviceCapabilitiesUpdated")
class DeviceCapabilitiesUpdated(msgspec.Struct, frozen=True):
    device_id: str
    capabilities: Capabilities


@event("registry.DeviceLabelsChanged")
class DeviceLabelsChanged(msgspec.Struct, frozen=True):
    device_id: str
    labels: dict[str, str]  # the complete new set


@event("registry.DeviceCameOnline")
class DeviceCameOnline(msgspec.Struct, frozen=True):
    device_id: str
    seen_at: datetime


@event("registry.DeviceWentOffline")
class DeviceWentOffline(msgspec.Struct, frozen=True):
    device_id: str
    last_seen_at: datetime
    silence_s: float


@event("registry.DeviceDecommissioned")
class DeviceDecommissioned(msgspec.Struct, frozen=True):
    device_id: str
    public_key: str | None
    reason: str = ""


# --- the announce exchange (agent → registry, request/reply on sdv.announce.<device_id>) ----


class Announce(msgspec.Struct, frozen=True, kw_only=True):
    """An agent introduces itself with its own public nkey (it keeps the seed). `token` is a
    pre-authorisation or fleet enrolment token, when it has one. `nonce` is the registry's
    challenge and `signature` the key's over the rest (sdv_events.enrolment): an announce without
    them is answered with a challenge only."""

    device_id: DeviceId
    public_key: UserPublicKey
    capabilities: Capabilities
    token: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    nonce: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    signature: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class DeviceCredentials(msgspec.Struct, frozen=True):
    """A user JWT for the device's own key: nothing secret (the seed never left the device)."""

    jwt: str
    expires_at: datetime
    inbox_prefix: str  # connect with `inbox_prefix=` this: the device may read no other inbox
    account: str


class AnnounceReply(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    status: AnnounceStatus
    credentials: DeviceCredentials | None = None
    retry_after_s: float = 0.0  # pending: announce again after this long
    message: str = ""
    nonce: str = ""  # status "challenge": sign the announce over this nonce


# --- registry commands and queries (sdv.cmd.registry.<name>) ---------------------------------


class AcceptDevice(msgspec.Struct, frozen=True):
    """`key_fingerprint` (as a device view shows it): accept only if the device still announces
    that key — the operator admits the key they saw, never one swapped in since."""

    device_id: DeviceId
    reason: Text = ""
    key_fingerprint: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class RejectDevice(msgspec.Struct, frozen=True):
    device_id: DeviceId
    reason: Text = ""


class DecommissionDevice(msgspec.Struct, frozen=True):
    device_id: DeviceId
    reason: Text = ""


class PreauthorizeDevice(msgspec.Struct, frozen=True):
    device_id: DeviceId
    token: Annotated[str, msgspec.Meta(min_length=16, max_length=256)]
    labels: Labels = {}


class SetLabels(msgspec.Struct, frozen=True):
    """Add or overwrite `labels`, then drop the keys in `remove`."""

    device_id: DeviceId
    labels: Labels = {}
    remove: Annotated[list[str], msgspec.Meta(max_length=64)] = []


class GetDevice(msgspec.Struct, frozen=True):
    device_id: DeviceId


class ListDevices(msgspec.Struct, frozen=True, kw_only=True):
    """`selector` is a Kubernetes-style label selector (`type=jetson-orin,env in (test,dev)`)."""

    selector: Text = ""
    status: DeviceStatus | None = None
    online: bool | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


class CountDevices(msgspec.Struct, frozen=True, kw_only=True):
    selector: Text = ""
    status: DeviceStatus | None = None
    online: bool | None = None


class ResolveSelector(msgspec.Struct, frozen=True, kw_only=True):
    """The accepted devices a rollout may target (the orchestrator's query)."""

    selector: Text
    online_only: bool = False


class DeviceView(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    status: DeviceStatus
    public_key: str | None = None
    key_fingerprint: str | None = None  # of public_key (sdv_events.enrolment.key_fingerprint)
    capabilities: Capabilities | None = None
    labels: dict[str, str] = {}
    online: bool = False
    last_seen_at: datetime | None = None
    admitted_by: AdmittedBy | None = None
    created_at: datetime
    updated_at: datetime
    version: int


class DeviceList(msgspec.Struct, frozen=True):
    devices: list[DeviceView]
    total: int  # matching devices, before limit/offset


class DeviceCounts(msgspec.Struct, frozen=True):
    total: int
    online: int
    by_status: dict[str, int]


class ResolvedDevices(msgspec.Struct, frozen=True):
    selector: str
    device_ids: list[str]


class GetRegistryStats(msgspec.Struct, frozen=True):
    pass


class RegistryStats(msgspec.Struct, frozen=True):
    """Counters of the answering registry process (since it started)."""

    heartbeats: int  # heartbeat messages handled
    presence_transitions: int  # online/offline commands run
    tracked_online: int  # devices this process currently counts as online
    revocation_pushes: int
