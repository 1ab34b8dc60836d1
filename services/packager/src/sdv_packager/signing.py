"""Ed25519 signing key of the packager: generated on first run, stored owner-only (0600)."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdv_events.key_files import load_or_create_ed25519
from sdv_events.package_format import key_id


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key_b64 = base64.b64encode(raw).decode()
        self.key_id = key_id(raw)

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        return cls(load_or_create_ed25519(path))

    def sign(self, manifest_digest: str) -> str:
        return base64.b64encode(self._key.sign(manifest_digest.encode())).decode()
