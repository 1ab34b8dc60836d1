"""Enrolment proves possession of the device's key (issue 11, point 4).

The exchange on `sdv.announce.<device_id>` takes two requests:

1. The device announces without a signature; the registry answers `status="challenge"` with a
   nonce (stateless: a timestamp and an HMAC over it and the device id, so any registry replica
   can check it, valid for `NONCE_TTL_S`).
2. The device announces again with that nonce and an ed25519 signature, made with its own user
   nkey, over the whole announce (nonce, id, public key, capabilities, token). The registry
   verifies it with the announced public key, and the device decider then only lets the key
   registered for that id change anything — so a re-announce (new capabilities, a JWT that
   expired while the device was offline) is signed by the device's registered key.

Renewal takes the same two requests on `sdv.renew.<device_id>`, over the device's own
connection: only that device's JWT may publish there (the enrolment user may not), so the
shared credential is needed for the first enrolment only. The signature covers a context of
its own (`renew`), so an announce can never be replayed as a renewal or the other way round.

Replies are readable by anyone holding the shared enrolment credential: NATS permissions are
per user, so every enrolling connection shares one inbox namespace (`_ENROL.>`); nats-server
2.15 has no per-connection subject template to confine it. So the registry seals every reply
to an announce carrying a well-formed key to that key (libsodium sealed box, the ed25519 key
converted to curve25519) and marks it with `SEALED_HEADER`: only the holder of the seed reads
ids, statuses or JWTs. Only replies to malformed requests (no usable key) travel in clear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Literal

import msgspec
import nacl.exceptions
import nacl.public
import nacl.signing
import nkeys
from nats.aio.client import Client as NatsClient

from sdv_events.auth.keys import Role, check_public_key, public_key
from sdv_events.auth.permissions import announce_subject, renew_subject
from sdv_events.bus.rpc import Reply, ReplyError, error_from_reply
from sdv_events.codec import decode_as, encode
from sdv_events.fingerprint import key_fingerprint
from sdv_events.schemas.devices import Announce, AnnounceReply, Capabilities

__all__ = ["SEALED_HEADER", "SEALED_SCHEME", "InvalidSignature", "Purpose", "announce", "issue_nonce",
           "key_fingerprint", "nonce_is_valid", "open_sealed", "renew", "seal_to", "sign_announce",
           "verify_announce"]

SEALED_HEADER = "Sdv-Sealed"
SEALED_SCHEME = "x25519-sealedbox"
NONCE_TTL_S = 120.0
Purpose = Literal["announce", "renew"]
_SIGNING_CONTEXTS: dict[Purpose, bytes] = {"announce": b"sdv-announce-v1\n", "renew": b"sdv-renew-v1\n"}


class InvalidSignature(ValueError):
    """The announce is not signed by the key it names (or not over this nonce)."""


# --- signatures ---------------------------------------------------------------------------


def signing_input(announce: Announce, purpose: Purpose = "announce") -> bytes:
    """What a device signs: the purpose and the announce as sent, without the signature itself."""
    return _SIGNING_CONTEXTS[purpose] + encode(msgspec.structs.replace(announce, signature=None))


def sign_announce(announce: Announce, keypair: nkeys.KeyPair, purpose: Purpose = "announce") -> Announce:
    signature = keypair.sign(signing_input(announce, purpose))
    return msgspec.structs.replace(
        announce, signature=base64.urlsafe_b64encode(bytes(signature)).decode().rstrip("="))


def _verify_key(user_public_key: str) -> nacl.signing.VerifyKey:
    check_public_key(user_public_key, Role.USER)
    raw = base64.b32decode(user_public_key + "=" * (-len(user_public_key) % 8))
    return nacl.signing.VerifyKey(raw[1:-2])


def verify_announce(announce: Announce, purpose: Purpose = "announce") -> None:
    """`InvalidSignature` unless `announce.signature` is the announced key's over it (for
    `purpose`)."""
    if announce.signature is None:
        raise InvalidSignature("the announce carries no signature")
    try:
        sig = base64.urlsafe_b64decode(announce.signature + "=" * (-len(announce.signature) % 4))
        _verify_key(announce.public_key).verify(signing_input(announce, purpose), sig)
    except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError):
        raise InvalidSignature("the signature is not the announced key's over this announce") from None


# --- nonces (stateless, shared by the registry's replicas through `secret`) ----------------


def issue_nonce(secret: bytes, device_id: str, *, now: float | None = None) -> str:
    stamp = str(int(now if now is not None else time.time()))
    mac = hmac.new(secret, f"{stamp}.{device_id}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{stamp}.{mac}"


def nonce_is_valid(secret: bytes, device_id: str, nonce: str, *, now: float | None = None) -> bool:
    stamp, _, mac = nonce.partition(".")
    if not stamp.isdigit() or len(stamp) > 12:
        return False
    age = (now if now is not None else time.time()) - int(stamp)
    if not -5.0 <= age <= NONCE_TTL_S:
        return False
    return hmac.compare_digest(issue_nonce(secret, device_id, now=int(stamp)).partition(".")[2], mac)


# --- sealing replies to the announced key -------------------------------------------------


def seal_to(user_public_key: str, data: bytes) -> bytes:
    curve = _verify_key(user_public_key).to_curve25519_public_key()
    return bytes(nacl.public.SealedBox(curve).encrypt(data))


def open_sealed(keypair: nkeys.KeyPair, data: bytes) -> bytes:
    raw_seed = nkeys.decode_seed(bytes(keypair.seed))[1]
    private = nacl.signing.SigningKey(bytes(raw_seed)).to_curve25519_private_key()
    return bytes(nacl.public.SealedBox(private).decrypt(data))


# --- the device side of the exchange ------------------------------------------------------


async def _request(nc: NatsClient, keypair: nkeys.KeyPair, subject: str, body: Announce,
                   timeout: float) -> AnnounceReply:
    msg = await nc.request(subject, encode(body), timeout=timeout)
    data = msg.data
    if (msg.headers or {}).get(SEALED_HEADER) == SEALED_SCHEME:
        data = open_sealed(keypair, data)
    reply: Reply = decode_as(data, Reply)  # type: ignore[arg-type]
    if isinstance(reply, ReplyError):
        raise error_from_reply(reply)
    return decode_as(bytes(reply.result), AnnounceReply)


async def announce(nc: NatsClient, keypair: nkeys.KeyPair, device_id: str,
                   capabilities: Capabilities, *, token: str | None = None,
                   timeout: float = 5.0) -> AnnounceReply:
    """Announce `device_id` with `keypair`'s public key: ask for a nonce, sign, announce. Raises
    the typed `CommandError` of an error reply (`rate_limited` carries `retry_after_s`)."""
    body = Announce(device_id=device_id, public_key=public_key(keypair),
                    capabilities=capabilities, token=token)
    return await _exchange(nc, keypair, announce_subject(device_id), body, "announce", timeout)


async def renew(nc: NatsClient, keypair: nkeys.KeyPair, device_id: str, capabilities: Capabilities,
                *, timeout: float = 5.0) -> AnnounceReply:
    """The same exchange on `sdv.renew.<device_id>`, over the device's own connection `nc`."""
    body = Announce(device_id=device_id, public_key=public_key(keypair), capabilities=capabilities)
    return await _exchange(nc, keypair, renew_subject(device_id), body, "renew", timeout)


async def _exchange(nc: NatsClient, keypair: nkeys.KeyPair, subject: str, body: Announce,
                    purpose: Purpose, timeout: float) -> AnnounceReply:
    challenge = await _request(nc, keypair, subject, body, timeout)
    if challenge.status != "challenge":
        return challenge
    signed = sign_announce(msgspec.structs.replace(body, nonce=challenge.nonce), keypair, purpose)
    return await _request(nc, keypair, subject, signed, timeout)
