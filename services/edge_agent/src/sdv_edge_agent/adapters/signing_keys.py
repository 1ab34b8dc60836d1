"""Which packager and orchestrator keys this agent trusts, and how it learns them.

Given on the command line or in the environment (`--packager-key`, `--orchestrator-key`), keys
are pinned: nothing the suite says changes them. Otherwise an agent that enrols over enrolment
credentials learns them from the user JWT the registry issues it (`sdv_events.auth.suite_keys`:
the JWT must be signed by the devices signing key its enrolment credentials name, be this
device's, and not be older than the one the keys came from last). They are learned again from
every new JWT — a renewal brings the registry's current list, so a rotation reaches the fleet
with its next renewals — and at start from the `device.creds` kept on disk, before any installed
app is started again (its kept signature is checked with these keys).

Until it has keys, the agent verifies nothing: every package and desired document is refused
(it cannot receive one before it enrolled anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

from sdv_events.auth import InvalidJwt
from sdv_events.auth.creds import jwt_of_creds
from sdv_events.auth.suite_keys import CredentialsPin, LearnedKeys, UntrustedCredentials
from sdv_events.desired_signing import parse_public_key, raw_public_key
from sdv_events.package_format import key_id

log = structlog.get_logger("sdv.agent.keys")


def key_ids(keys: tuple[str, ...]) -> list[str]:
    return [key_id(raw_public_key(parse_public_key(k))) for k in keys]


class TrustedKeys:
    def __init__(self, packager: tuple[str, ...] = (), orchestrator: tuple[str, ...] = (),
                 pin: CredentialsPin | None = None) -> None:
        self.configured_packager = packager
        self.configured_orchestrator = orchestrator
        self.pin = pin
        self.learned: LearnedKeys | None = None
        self._listeners: list[Callable[[], None]] = []

    @classmethod
    def of(cls, packager: tuple[str, ...], orchestrator: tuple[str, ...],
           enrol_creds: Path | None) -> TrustedKeys:
        """Configured keys, and the pin of the enrolment credentials (when given and readable)."""
        pin = None
        if enrol_creds is not None:
            try:
                pin = CredentialsPin.of_enrolment(jwt_of_creds(enrol_creds.read_text()))
            except (OSError, ValueError, InvalidJwt) as err:
                log.error("enrolment_credentials_unusable_as_pin", path=str(enrol_creds), reason=str(err),
                          consequence="no signing key is learned from issued credentials")
        return cls(packager, orchestrator, pin)

    @property
    def packager(self) -> tuple[str, ...]:
        if self.configured_packager:
            return self.configured_packager
        return self.learned.keys.packager if self.learned else ()

    @property
    def orchestrator(self) -> tuple[str, ...]:
        if self.configured_orchestrator:
            return self.configured_orchestrator
        return self.learned.keys.orchestrator if self.learned else ()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def learn(self, jwt: str, *, device_key: str) -> bool:
        """Take the keys `jwt` carries, if it passes every check (else logged and ignored);
        True when what this agent trusts changed."""
        if self.pin is None:
            return False
        try:
            learned = self.pin.keys_of(jwt, device_key=device_key,
                                       newer_than=self.learned.issued_at if self.learned else 0)
        except UntrustedCredentials as err:
            log.error("credentials_keys_refused", reason=str(err), keeps=self.describe())
            return False
        if learned is None:
            if not self.learned and not (self.configured_packager and self.configured_orchestrator):
                log.error("credentials_carry_no_signing_keys",
                          consequence="nothing can be verified: configure the registry's "
                                      "SDV_REGISTRY_PACKAGER_KEYS / SDV_REGISTRY_ORCHESTRATOR_KEYS, or "
                                      "give this agent --packager-key and --orchestrator-key")
            return False
        before = (self.packager, self.orchestrator)
        self.learned = learned
        if (self.packager, self.orchestrator) == before:
            return False
        log.info("signing_keys_trusted", **self.describe())
        for listener in self._listeners:
            listener()
        return True

    def describe(self) -> dict[str, object]:
        return {"packager": key_ids(self.packager), "orchestrator": key_ids(self.orchestrator),
                "packager_from": "configured" if self.configured_packager else "credentials",
                "orchestrator_from": "configured" if self.configured_orchestrator else "credentials"}
