"""Identity of device facts: the same fact reported twice carries the same message id, so the
bus drops the duplicate (JetStream `Nats-Msg-Id` dedupe) — a redelivered desired state, a retry
after a lost ack or an agent restart mid-step never counts twice.

A fact is identified by (device, app, digest, desired revision, type). Facts that legitimately
happen more than once under one desired revision — a restart after a crash, a pause/resume from
an interactive op — add an occurrence number that the agent counts and persists.
"""

from __future__ import annotations

import uuid

from sdv_events.registry import short_name

# Namespace of the UUIDv5 event ids derived from fact message ids (a fixed, arbitrary UUID).
FACT_NAMESPACE = uuid.UUID("6f1c7a52-3b8e-4d5e-9a41-7c2f0e8d9b13")


def fact_msg_id(
    device_id: str, app: str, digest: str, revision: int, event_type: str, occurrence: int = 0
) -> str:
    base = f"{device_id}:{app}:{digest[:16]}:{revision}:{short_name(event_type)}"
    return base if occurrence == 0 else f"{base}:{occurrence}"


def fact_event_id(msg_id: str) -> uuid.UUID:
    """A stable event id: the same fact gets the same id wherever and whenever it is built."""
    return uuid.uuid5(FACT_NAMESPACE, msg_id)
