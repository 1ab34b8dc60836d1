"""NATS JWTs (v2): base64url(header) . base64url(claims) . base64url(ed25519 signature).

The signature is made by the issuer's nkey over the first two parts; `jti` is the base32 (no
padding) sha512/256 of the claims with an empty `jti`, as nats-io/jwt computes it. The server
checks the signature chain (operator → account → user), `exp`, and the account's revocations.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

from sdv_events.auth.keys import public_key

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


class InvalidJwt(ValueError):
    """A token that is not a well-formed NATS JWT, or whose signature does not verify."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def jti_of(claims: dict[str, Any]) -> str:
    digest = hashlib.new("sha512_256", _json({**claims, "jti": ""})).digest()
    return base64.b32encode(digest).rstrip(b"=").decode()


def encode_jwt(claims: dict[str, Any], issuer: nkeys.KeyPair, *, issued_at: int) -> str:
    """Sign `claims` (a dict with `sub`, `nats`, optional `exp`/`name`) as `issuer`."""
    body = {**claims, "iss": public_key(issuer), "iat": issued_at}
    body["jti"] = jti_of(body)
    signing_input = f"{_b64(_json(HEADER))}.{_b64(_json(body))}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def decode_jwt(token: str, *, verify: bool = True) -> dict[str, Any]:
    """The claims of `token`; with `verify`, the signature must match the `iss` public key."""
    try:
        header_b64, claims_b64, sig_b64 = token.split(".")
        header = json.loads(_unb64(header_b64))
        claims: dict[str, Any] = json.loads(_unb64(claims_b64))
        signature = _unb64(sig_b64)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJwt(f"not a JWT: {exc}") from None
    if header != HEADER:
        raise InvalidJwt(f"unexpected JWT header {header!r}")
    if verify:
        try:
            _verify(claims["iss"], f"{header_b64}.{claims_b64}".encode(), signature)
        except (KeyError, TypeError, ValueError, nacl.exceptions.BadSignatureError) as exc:
            raise InvalidJwt(f"signature does not verify: {exc!r}") from None
    return claims


def _verify(issuer_public: str, data: bytes, signature: bytes) -> None:
    raw = base64.b32decode(issuer_public + "=" * (-len(issuer_public) % 8))[1:-2]
    nacl.signing.VerifyKey(raw).verify(data, signature)
