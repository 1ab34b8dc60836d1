"""Short, stable names of device keys that operators compare: a device view shows one, and an
accept naming one admits only that key (issue 11). Pure: the device decider uses it."""

from __future__ import annotations

import hashlib


def key_fingerprint(user_public_key: str) -> str:
    """SHA-256 of the public nkey, 16 hex digits in groups of four (`a1b2:c3d4:e5f6:0718`)."""
    digest = hashlib.sha256(user_public_key.encode()).hexdigest()[:16]
    return ":".join(digest[i:i + 4] for i in range(0, 16, 4))
