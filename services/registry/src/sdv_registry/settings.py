"""Configuration of the registry: the shared settings plus device auth and presence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from sdv_events.service import ServiceSettings

SERVICE = "registry"


class RegistrySettings(ServiceSettings):
    service: str = SERVICE
    # The registry's part of the chain of trust (sdv_events.auth.DeviceAuthority: the devices
    # account's signing key, an operator signing key, the system user), as `sdv up` writes it
    # to registry-trust.json. Without it devices are still admitted, but get no NATS
    # credentials and nothing can be revoked.
    trust_file: Path | None = Field(None, validation_alias="SDV_TRUST_FILE")
    # Agents renew (sdv.renew.<id>) before expiry.
    credential_ttl_s: float = Field(24 * 3600.0, validation_alias="SDV_REGISTRY_CREDENTIAL_TTL_S", gt=0)
    # Re-push period of revocations (a restarted memory-resolver server forgets them).
    revocation_push_s: float = Field(30.0, validation_alias="SDV_REGISTRY_REVOCATION_PUSH_S", gt=0)
    # Devices presenting this token are accepted at once (fleet-wide enrolment, e.g. `sdv up`).
    fleet_token: str | None = Field(None, validation_alias="SDV_FLEET_TOKEN")
    # The packager's and orchestrator's public keys (base64 Ed25519, comma-separated; old and new
    # during a rotation) written into every device's credentials: agents learn which keys to
    # trust from them (sdv_events.auth.suite_keys). Empty: agents must be given the keys.
    packager_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="SDV_REGISTRY_PACKAGER_KEYS")
    orchestrator_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="SDV_REGISTRY_ORCHESTRATOR_KEYS")
    # Silence after which an online device goes offline.
    heartbeat_silence_s: float = Field(15.0, validation_alias="SDV_REGISTRY_HEARTBEAT_SILENCE_S", gt=0)
    # What pending devices are told about announcing again.
    pending_retry_s: float = Field(10.0, validation_alias="SDV_REGISTRY_PENDING_RETRY_S", gt=0)
    # Announce rate limits (token buckets; one enrolment is two announces: challenge, signed).
    announce_per_device_rate: float = Field(  # per second, for each device id
        1.0, validation_alias="SDV_REGISTRY_ANNOUNCE_PER_DEVICE_RATE", gt=0)
    announce_per_device_burst: float = Field(
        30.0, validation_alias="SDV_REGISTRY_ANNOUNCE_PER_DEVICE_BURST", ge=1)
    announce_global_rate: float = Field(  # per second, all ids together
        200.0, validation_alias="SDV_REGISTRY_ANNOUNCE_RATE", gt=0)
    announce_global_burst: float = Field(1000.0, validation_alias="SDV_REGISTRY_ANNOUNCE_BURST", ge=1)

    @field_validator("packager_keys", "orchestrator_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value


def load_settings() -> RegistrySettings:
    """From the environment; raises `SettingsError` naming the variable of a bad value."""
    return RegistrySettings.load()
