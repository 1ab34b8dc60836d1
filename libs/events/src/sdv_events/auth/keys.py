"""NATS nkeys: making key pairs and checking public keys that arrive from outside.

A public nkey is base32 (no padding) of one prefix byte naming its role, the 32-byte ed25519
public key and a CRC-16 — so a device's key can be checked for role and typos before anyone
trusts it.
"""

from __future__ import annotations

import base64
import binascii
import os
from enum import IntEnum

import nkeys


class Role(IntEnum):
    """The prefix byte of each role (`O…`, `A…`, `U…` public keys)."""

    OPERATOR = nkeys.PREFIX_BYTE_OPERATOR
    ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
    USER = nkeys.PREFIX_BYTE_USER


class InvalidPublicKey(ValueError):
    """A string that is not a public nkey of the expected role."""


def new_keypair(role: Role) -> nkeys.KeyPair:
    """A fresh key pair from 32 random bytes of the OS."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), int(role)))


def keypair_from_seed(seed: str | bytes) -> nkeys.KeyPair:
    return nkeys.from_seed(seed.encode() if isinstance(seed, str) else seed)


def public_key(kp: nkeys.KeyPair) -> str:
    return bytes(kp.public_key).decode()


def seed_of(kp: nkeys.KeyPair) -> str:
    return bytes(kp.seed).decode()


def check_public_key(value: str, role: Role) -> str:
    """Return `value` if it is a well-formed public nkey of `role`; else `InvalidPublicKey`."""
    if not isinstance(value, str) or len(value) != 56 or not value.isascii():
        raise InvalidPublicKey(f"not a public nkey: expected 56 base32 characters, got {value!r:.80}")
    try:
        raw = base64.b32decode(value + "=" * (-len(value) % 8))
    except (binascii.Error, ValueError):
        raise InvalidPublicKey(f"not a public nkey: {value!r} is not base32") from None
    body, checksum = raw[:-2], int.from_bytes(raw[-2:], "little")
    if nkeys.crc16(bytearray(body)) != checksum:
        raise InvalidPublicKey(f"public nkey {value!r} fails its checksum")
    if body[0] != int(role):
        raise InvalidPublicKey(f"public nkey {value[:8]}… is not a {role.name.lower()} key")
    return value
