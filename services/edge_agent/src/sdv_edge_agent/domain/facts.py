"""Identity of device facts: the same fact reported twice carries the same message id, so the
bus drops the duplicate (JetStream `Nats-Msg-Id` dedupe) — a redelivered desired state, a retry
after a lost ack or an agent restart mid-step never counts twice.

A fact is identified by (device, app, digest, desired revision, type). Facts that legitimately
happen more than once under one desired revision — a pause/resume from an interactive op — add an
occurrence number that the agent counts and persists. Facts about one run of the app (its start,
its health, its failure) add the run's number instead: the same run says each of them once,
whether the agent restarts in between or not.

JetStream dedupes message ids across the whole stream, whoever published them: an id another
device could compute would let that device publish a decoy first and have the real fact dropped
as a duplicate. So what goes on the wire is `IdSealer.seal`: an HMAC of that identity under a
secret only this device holds — stable for the same fact on this device, unpredictable elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from sdv_events.registry import short_name

# Namespace of the UUIDv5 event ids derived from fact message ids (a fixed, arbitrary UUID).
FACT_NAMESPACE = uuid.UUID("6f1c7a52-3b8e-4d5e-9a41-7c2f0e8d9b13")
SECRET_BYTES = 32


def fact_msg_id(
    device_id: str, app: str, digest: str, revision: int, event_type: str, occurrence: int = 0,
    run: int | None = None,
) -> str:
    """The fact's identity in clear (never sent as is: see `IdSealer`)."""
    base = f"{device_id}:{app}:{digest[:16]}:{revision}:{short_name(event_type)}"
    if run is not None:
        return f"{base}:run{run}"
    return base if occurrence == 0 else f"{base}:{occurrence}"


def fact_event_id(msg_id: str) -> uuid.UUID:
    """A stable event id: the same fact gets the same id wherever and whenever it is built."""
    return uuid.uuid5(FACT_NAMESPACE, msg_id)


class IdSealer:
    """Message ids only this device can produce: `<device>:<HMAC-SHA256(secret, identity)>`."""

    def __init__(self, device_id: str, secret: bytes) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"the message-id secret must hold at least {SECRET_BYTES} bytes")
        self.device_id = device_id
        self._secret = secret

    def seal(self, identity: str) -> str:
        mac = hmac.new(self._secret, identity.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{self.device_id}:{mac}"

    def fact_id(self, app: str, digest: str, revision: int, event_type: str, occurrence: int = 0,
                run: int | None = None) -> str:
        return self.seal(fact_msg_id(self.device_id, app, digest, revision, event_type, occurrence, run))

    def log_id(self, row_id: int) -> str:
        return self.seal(f"log:{row_id}")
