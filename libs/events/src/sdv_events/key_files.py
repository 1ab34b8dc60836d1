"""Ed25519 private keys of the services on disk: created at first start, owner-only (0600).

The packager keeps the package signing key this way, the orchestrator its desired-state signing
key — two files, two keys: whoever holds one cannot sign for the other.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def load_or_create_ed25519(path: Path) -> Ed25519PrivateKey:
    """The key at `path`; a new one written there (0600, its folder 0700) when there is none.
    Refuses a key file others may read. Two processes creating it at once end up with the same
    key: the file appears whole (a hard link of a complete temporary file) or not at all."""
    if not path.exists():
        _create(path)
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"signing key {path} is readable by others; chmod 600 it")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_public_key(path: Path, public_key_b64: str) -> None:
    """The public half beside the private key (`<name>.pub`, base64, world-readable), for tools
    and agents' configuration; rewritten atomically when it differs."""
    text = public_key_b64 + "\n"
    if path.exists() and path.read_text() == text:
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.chmod(0o644)
    os.replace(temporary, path)
