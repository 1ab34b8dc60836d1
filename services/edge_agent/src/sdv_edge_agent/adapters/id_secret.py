"""The device's message-id secret (see `domain/facts.py`): made once, kept owner-only in the data
directory, the same across restarts so a fact re-sent after a restart keeps its id."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import structlog

from sdv_edge_agent.domain.facts import SECRET_BYTES

log = structlog.get_logger("sdv.agent.id_secret")
SECRET_FILE = "msgid.key"


def load_or_create_secret(data_dir: Path) -> bytes:
    path = data_dir / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        secret = path.read_bytes()
        if len(secret) >= SECRET_BYTES:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return secret
        log.warning("id_secret_replaced", reason=f"{path} holds {len(secret)} bytes")
        path.unlink()
    secret = secrets.token_bytes(SECRET_BYTES)
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a secret another start made meanwhile
    except FileExistsError:
        return load_or_create_secret(data_dir)
    finally:
        tmp.unlink()
    log.info("id_secret_created", path=str(path))
    return secret
