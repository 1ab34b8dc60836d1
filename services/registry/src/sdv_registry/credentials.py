"""NATS credentials for accepted devices: a user JWT of the devices account for the device's own
public key, signed by that account's signing key, with the device's permissions, an expiry and
the packager's and orchestrator's public keys the device is to trust (`sdv_events.auth.suite_keys`:
the agent learns them from the JWT, whose signature it checks against its enrolment
credentials). The seed never leaves the device, so the JWT can travel in a plain reply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sdv_events.auth import DeviceAuthority, device_inbox_prefix, device_permissions
from sdv_events.auth.suite_keys import SuiteKeys
from sdv_events.schemas.devices import DeviceCredentials


@dataclass(frozen=True)
class CredentialIssuer:
    authority: DeviceAuthority
    ttl_s: float
    clock: Callable[[], datetime]
    signing_keys: SuiteKeys | None = None  # None: agents must be given the keys themselves

    def issue(self, device_id: str, public_key: str) -> DeviceCredentials:
        now = self.clock()
        expires = (now + timedelta(seconds=self.ttl_s)).replace(microsecond=0)
        jwt = self.authority.device_jwt(
            public_key, device_id, device_permissions(device_id),
            expires_at=int(expires.timestamp()), issued_at=int(now.timestamp()),
            signing_keys=self.signing_keys,
        )
        return DeviceCredentials(jwt, expires, device_inbox_prefix(device_id),
                                 self.authority.devices_account)
