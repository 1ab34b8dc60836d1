"""Configuration of the registry: the shared settings plus device auth and presence."""

from __future__ import annotations

import os
from pathlib import Path

from sdv_events.service import ServiceSettings

SERVICE = "registry"


class RegistrySettings(ServiceSettings):
    # The registry's part of the chain of trust (sdv_events.auth.DeviceAuthority: the devices
    # account's signing key, an operator signing key, the system user), as `sdv up` writes it
    # to registry-trust.json. Without it devices are still admitted, but get no NATS
    # credentials and nothing can be revoked.
    trust_file: Path | None = None
    credential_ttl_s: float = 24 * 3600.0  # agents renew (sdv.renew.<id>) before expiry
    revocation_push_s: float = 30.0  # re-push period (a restarted memory-resolver server forgets)
    # Devices presenting this token are accepted at once (fleet-wide enrolment, e.g. `sdv up`).
    fleet_token: str | None = None
    # The packager's and orchestrator's public keys (base64 Ed25519; old and new during a
    # rotation) written into every device's credentials: agents learn which keys to trust from
    # them (sdv_events.auth.suite_keys). Empty: agents must be given the keys (--packager-key …).
    packager_keys: list[str] = []
    orchestrator_keys: list[str] = []
    heartbeat_silence_s: float = 15.0  # silence after which an online device goes offline
    pending_retry_s: float = 10.0  # what pending devices are told about announcing again
    # Announce rate limits (token buckets; one enrolment is two announces: challenge, signed).
    announce_per_device_rate: float = 1.0  # per second, for each device id
    announce_per_device_burst: float = 30.0
    announce_global_rate: float = 200.0  # per second, all ids together
    announce_global_burst: float = 1000.0


def _keys(text: str | None) -> list[str] | None:
    """A comma-separated list of base64 public keys (None when unset or empty)."""
    return [k.strip() for k in (text or "").split(",") if k.strip()] or None


def load_settings() -> RegistrySettings:
    env = {
        "trust_file": os.environ.get("SDV_TRUST_FILE"),
        "credential_ttl_s": os.environ.get("SDV_REGISTRY_CREDENTIAL_TTL_S"),
        "fleet_token": os.environ.get("SDV_FLEET_TOKEN"),
        "packager_keys": _keys(os.environ.get("SDV_REGISTRY_PACKAGER_KEYS")),
        "orchestrator_keys": _keys(os.environ.get("SDV_REGISTRY_ORCHESTRATOR_KEYS")),
        "heartbeat_silence_s": os.environ.get("SDV_REGISTRY_HEARTBEAT_SILENCE_S"),
        "announce_per_device_rate": os.environ.get("SDV_REGISTRY_ANNOUNCE_PER_DEVICE_RATE"),
        "announce_per_device_burst": os.environ.get("SDV_REGISTRY_ANNOUNCE_PER_DEVICE_BURST"),
        "announce_global_rate": os.environ.get("SDV_REGISTRY_ANNOUNCE_RATE"),
        "announce_global_burst": os.environ.get("SDV_REGISTRY_ANNOUNCE_BURST"),
    }
    return RegistrySettings.from_env(SERVICE, **{k: v for k, v in env.items() if v})
