"""A recorded fact back as the agent's typed fact (None when it cannot be trusted or read)."""

from __future__ import annotations

import re

import msgspec

from sdv_events.envelope import Envelope
from sdv_events.registry import default_registry
from sdv_events.schemas.agent import AppFact
from sdv_events.schemas.monitor import DeviceFactRecorded

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_VERSION = re.compile(r"[A-Za-z0-9_.+!-]{1,64}")


def fact_of(event: Envelope) -> AppFact | None:
    recorded = event.data
    if not isinstance(recorded, DeviceFactRecorded) or recorded.oversized_bytes:
        return None
    resolved = default_registry.resolve(recorded.fact_type)
    if resolved is None or not issubclass(resolved[0], AppFact):
        return None
    cls, upcasters = resolved
    body = recorded.data
    for up in upcasters:
        body = up(body)
    try:
        fact = msgspec.convert(body, cls)
    except msgspec.ValidationError:
        return None
    if not isinstance(fact, AppFact):
        return None
    # A device speaks only for itself (the subject it published on named `device_id`), and
    # what it says lands in text columns: names as the packager allows them, nothing unbounded.
    if fact.device_id != recorded.device_id or not _NAME.fullmatch(fact.app) \
            or not _VERSION.fullmatch(fact.version) \
            or (fact.rollout_id is not None and not _NAME.fullmatch(fact.rollout_id)):
        return None
    return fact
