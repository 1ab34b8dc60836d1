"""Idempotency keys without servers: the fingerprint is of the request, not of its JSON spelling,
and the TTL is configurable."""

from __future__ import annotations

import msgspec
import pytest

from sdv_events.codec import decode_as
from sdv_events.idempotency import DEFAULT_KEY_TTL, idempotency_key, request_fingerprint
from sdv_events.service import ServiceSettings


class SetLabels(msgspec.Struct, frozen=True):
    device_id: str
    labels: dict[str, str] = {}
    remove: list[str] = []


def test_fingerprint_ignores_field_order_dict_order_and_spelled_out_defaults() -> None:
    spellings = [b'{"device_id": "d1", "labels": {"a": "1", "b": "2"}}',
                 b'{"labels":{"b":"2","a":"1"},"remove":[],"device_id":"d1"}']

    prints = {request_fingerprint(decode_as(raw, SetLabels)) for raw in spellings}

    assert len(prints) == 1


def test_fingerprint_differs_for_another_request() -> None:
    assert request_fingerprint(SetLabels("d1", {"a": "1"})) != request_fingerprint(SetLabels("d1", {"a": "2"}))


def test_a_key_is_scoped_by_its_command() -> None:
    one = idempotency_key("sdv.cmd.registry.set_labels", "k", SetLabels("d1"))
    other = idempotency_key("sdv.cmd.registry.accept", "k", SetLabels("d1"))

    assert one != other
    assert one.fingerprint == other.fingerprint


def test_idempotency_ttl_defaults_to_a_day_and_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SDV_IDEMPOTENCY_TTL_S", raising=False)
    assert ServiceSettings.from_env("registry").idempotency_ttl_s == DEFAULT_KEY_TTL.total_seconds() == 86400
    monkeypatch.setenv("SDV_IDEMPOTENCY_TTL_S", "60")

    assert ServiceSettings.from_env("registry").idempotency_ttl_s == 60.0
