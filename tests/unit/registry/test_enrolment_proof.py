"""The pieces of enrolment's proof of possession, without servers: signatures over the whole
announce, stateless nonces, replies sealed to the announced key, announce token buckets."""

from __future__ import annotations

import msgspec
import nacl.exceptions
import pytest

from sdv_events.auth import Role, new_keypair, public_key
from sdv_events.enrolment import (
    NONCE_TTL_S,
    InvalidSignature,
    issue_nonce,
    key_fingerprint,
    nonce_is_valid,
    open_sealed,
    seal_to,
    sign_announce,
    verify_announce,
)
from sdv_events.schemas.devices import Announce, Capabilities
from sdv_registry.adapters.rate_limit import AnnounceLimiter

CAPS = Capabilities(hardware_type="linux-generic", arch="x86_64", runtimes=["native"],
                    python_version="3.11.9", agent_version="0.1.0", memory_mb=2048, storage_mb=8192)


def test_a_signature_covers_every_field_of_the_announce() -> None:
    key = new_keypair(Role.USER)
    signed = sign_announce(Announce(device_id="car-1", public_key=public_key(key), capabilities=CAPS,
                                    nonce="1.x"), key)
    verify_announce(signed)
    for changed in (msgspec.structs.replace(signed, device_id="car-2"),
                    msgspec.structs.replace(signed, nonce="2.x"),
                    msgspec.structs.replace(signed, token="t" * 20),
                    msgspec.structs.replace(signed, capabilities=msgspec.structs.replace(CAPS, memory_mb=1))):
        with pytest.raises(InvalidSignature):
            verify_announce(changed)


def test_a_signature_by_another_key_or_none_is_refused() -> None:
    genuine, other = new_keypair(Role.USER), new_keypair(Role.USER)
    body = Announce(device_id="car-1", public_key=public_key(genuine), capabilities=CAPS, nonce="1.x")
    with pytest.raises(InvalidSignature):
        verify_announce(sign_announce(body, other))
    with pytest.raises(InvalidSignature):
        verify_announce(body)
    with pytest.raises(InvalidSignature):
        verify_announce(msgspec.structs.replace(body, signature="!!not base64!!"))


def test_nonces_are_bound_to_the_device_the_secret_and_a_time_window() -> None:
    secret = b"s" * 32
    nonce = issue_nonce(secret, "car-1", now=1_000_000)
    assert nonce_is_valid(secret, "car-1", nonce, now=1_000_010)
    assert not nonce_is_valid(secret, "car-2", nonce, now=1_000_010)
    assert not nonce_is_valid(b"t" * 32, "car-1", nonce, now=1_000_010)
    assert not nonce_is_valid(secret, "car-1", nonce, now=1_000_000 + NONCE_TTL_S + 1)
    assert not nonce_is_valid(secret, "car-1", "garbage", now=1_000_010)


def test_a_sealed_reply_opens_only_with_the_announced_key() -> None:
    device, other = new_keypair(Role.USER), new_keypair(Role.USER)
    sealed = seal_to(public_key(device), b'{"status":"ok"}')
    assert b"status" not in sealed
    assert open_sealed(device, sealed) == b'{"status":"ok"}'
    with pytest.raises(nacl.exceptions.CryptoError):
        open_sealed(other, sealed)


def test_key_fingerprints_differ_per_key_and_are_stable() -> None:
    a, b = public_key(new_keypair(Role.USER)), public_key(new_keypair(Role.USER))
    assert key_fingerprint(a) == key_fingerprint(a) != key_fingerprint(b)


def test_announce_buckets_refuse_beyond_the_burst_and_refill_over_time() -> None:
    now = [0.0]
    limiter = AnnounceLimiter(per_device_rate=1.0, per_device_burst=3, global_rate=10.0,
                              global_burst=5, monotonic=lambda: now[0])
    assert [limiter.retry_after("car-1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.retry_after("car-1") == pytest.approx(1.0)
    assert [limiter.retry_after("car-2") for _ in range(2)] == [0.0, 0.0]
    assert limiter.retry_after("car-3") == pytest.approx(0.1)  # the global bucket is empty
    now[0] = 1.0
    assert limiter.retry_after("car-1") == 0.0
