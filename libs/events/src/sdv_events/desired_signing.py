"""Desired-state documents signed by the orchestrator, verified by the agent.

Whoever can write KV `sdv_desired` decides what an agent, running as root, installs and runs —
including the rollback flag that lets it go back to an older version. So the orchestrator signs
every document with an Ed25519 key of its own (never the packager's), and an agent acts only on a
document that verifies with the orchestrator key it pins.

The signature covers `DOMAIN` + the exact bytes of the `DesiredState` JSON (`SignedDesired.document`),
that is the device id, the revision and every field of every app: package (name, version, digest,
the packager's signature), state, config, rollout id, rollback flag. `DOMAIN` keeps a signature
made here from ever verifying as anything else, and anything else from verifying here.

What an agent refuses (`UntrustedDesired.cause`):
- `unsigned`: not a `SignedDesired` (an older unsigned document, or anything else);
- `unknown_key`: signed by a key that is not one of the pinned ones;
- `bad_signature`: the bytes are not those that were signed (a field changed, a signature reused);
- `undecodable`: signed, but not a `DesiredState` (cannot happen unless the key itself is misused);
- `other_device`: a document signed for another device, copied into this device's key;
- `replayed`: a revision lower than the newest one the agent accepted — an old, validly signed
  document written back (the agent persists what it accepted, so this holds across restarts).
A document of the very revision it accepted is the same document again (redelivery, the periodic
resync): not refused, nothing to do.

Pure: no I/O, no clock. Loading keys from files is the services' business (`key_files`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sdv_events.codec import decode_as
from sdv_events.errors import DecodeError, SdvError
from sdv_events.package_format import key_id
from sdv_events.schemas.deployment import DesiredState, SignedDesired

DOMAIN = b"sdv-fleet desired-state v1\n"

Cause = Literal["unsigned", "unknown_key", "bad_signature", "undecodable", "other_device", "replayed"]
_encoder = msgspec.json.Encoder()


class UntrustedDesired(SdvError):
    """A desired document the agent must not act on; `cause` says which check failed."""

    def __init__(self, cause: Cause, message: str, *, revision: int | None = None) -> None:
        super().__init__(message)
        self.cause: Cause = cause
        self.revision = revision


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public_key(key)).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A base64 Ed25519 public key, as `--orchestrator-key` takes it; ValueError names the problem."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


class DesiredSigner:
    """The orchestrator's side: a document in, the KV value out."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.public_key_b64 = public_key_b64(self.public_key)
        self.key_id = key_id(raw_public_key(self.public_key))

    def sign(self, state: DesiredState) -> bytes:
        document = _encoder.encode(state)
        signature = base64.b64encode(self._key.sign(DOMAIN + document)).decode()
        return _encoder.encode(SignedDesired(document=msgspec.Raw(document), key_id=self.key_id,
                                             signature=signature))

    def verifier(self) -> DesiredVerifier:
        return DesiredVerifier(self.public_key)


class DesiredVerifier:
    """The agent's side: a KV value in, the document out — or `UntrustedDesired`. It trusts
    every key it is given (two during a rotation of the orchestrator's key; none yet: nothing
    verifies)."""

    def __init__(self, public_key: Ed25519PublicKey | str | Sequence[Ed25519PublicKey | str]) -> None:
        given = [public_key] if isinstance(public_key, Ed25519PublicKey | str) else list(public_key)
        parsed = [parse_public_key(k) if isinstance(k, str) else k for k in given]
        self.keys = {key_id(raw_public_key(k)): k for k in parsed}

    @property
    def key_id(self) -> str:
        """The first key's id ("" when it trusts none)."""
        return next(iter(self.keys), "")

    def open(self, raw: bytes, *, device_id: str) -> DesiredState:
        """The document, if the pinned key signed exactly these bytes for `device_id`."""
        try:
            signed = decode_as(raw, SignedDesired)
        except DecodeError as err:
            raise UntrustedDesired("unsigned", f"not a signed desired document ({err})") from None
        key = self.keys.get(signed.key_id)
        if key is None:
            trusted = ", ".join(self.keys) or "none yet"
            raise UntrustedDesired("unknown_key", f"signed by key {signed.key_id[:32]!r}, this agent "
                                                  f"trusts only the orchestrator key(s) {trusted}")
        try:
            signature = base64.b64decode(signed.signature, validate=True)
            key.verify(signature, DOMAIN + bytes(signed.document))
        except (binascii.Error, ValueError, InvalidSignature):
            raise UntrustedDesired(
                "bad_signature",
                "the signature does not match the document: it was changed after it was signed") from None
        try:
            desired = decode_as(bytes(signed.document), DesiredState, path="$.document")
        except DecodeError as err:
            raise UntrustedDesired("undecodable", f"signed, but not a desired state: {err}") from None
        if desired.device_id != device_id:
            raise UntrustedDesired("other_device", f"the document is for device {desired.device_id[:128]!r}, "
                                                   f"not {device_id!r}", revision=desired.revision)
        return desired

    def accept(self, raw: bytes, *, device_id: str, accepted_revision: int) -> DesiredState | None:
        """`open`, then the revision: a newer document, None for the one already accepted, and
        `replayed` for an older one."""
        desired = self.open(raw, device_id=device_id)
        if desired.revision < accepted_revision:
            raise UntrustedDesired(
                "replayed", f"revision {desired.revision} is older than revision {accepted_revision}, "
                            "the newest this agent accepted: an old document written back",
                revision=desired.revision)
        return desired if desired.revision > accepted_revision else None
