"""PostgreSQL passwords: kept in pgpass files readable by their owner only, named in URLs by
path, and handed to the server as SCRAM verifiers.

A URL names its password file (`?passfile=…`, read by asyncpg and libpq alike) instead of
carrying the password: `sdv up` prints its database URL and passes one to every service in its
environment, and neither then holds a secret. Whoever can read the file — its owner — can connect.

The server is given a SCRAM-SHA-256 verifier, never the plain password (what `psql`'s
`\\password` does): a failing `ALTER ROLE` is logged with its statement, and a verifier in a log
lets nobody log in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_role_name(role: str) -> str:
    if not _ROLE_RE.fullmatch(role):
        raise ValueError(f"invalid role name {role!r}: lowercase letters, digits and '_' only")
    return role


def new_password() -> str:
    """256 random bits, in characters a pgpass line needs no escaping for."""
    return secrets.token_urlsafe(32)


def scram_verifier(password: str, *, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """The `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` PostgreSQL stores for
    `password` (RFC 5802/7677). Our passwords are ASCII, which SASLprep leaves as they are."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = [base64.b64encode(part).decode() for part in (salt, stored_key, server_key)]
    return f"SCRAM-SHA-256${iterations}:{b64[0]}${b64[1]}:{b64[2]}"


def write_passfile(path: Path, user: str, password: str) -> Path:
    """A pgpass file with one line for `user` (any host, port, database); mode 0600."""
    if any(c in password for c in ":\\\n"):
        raise ValueError("a pgpass password must not contain ':', '\\' or a newline")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file existed with other bits
    with os.fdopen(fd, "w") as out:
        out.write(f"*:*:*:{check_role_name(user)}:{password}\n")
    return path


def read_passfile(path: Path, user: str) -> str | None:
    """The password the pgpass file at `path` holds for `user`; None when there is no file."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) == 5 and fields[3] == user:
            return fields[4]
    raise ValueError(f"{path} holds no password for {user!r} (delete it to make a new one)")


def load_or_create_password(path: Path, user: str) -> tuple[str, bool]:
    """`user`'s password from `path`, or a new one saved there; and whether it is new."""
    password = read_passfile(path, user)
    if password is not None:
        os.chmod(path, 0o600)
        return password, False
    password = new_password()
    write_passfile(path, user, password)
    return password, True


def url_with_passfile(url: str, user: str, passfile: Path) -> str:
    """`url` connecting as `user` with the password in `passfile` (any password and passfile
    `url` named are dropped). Spaces become %20, which libpq decodes too (not `+`)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("passfile", "password", "user")]
    query.append(("passfile", str(passfile)))
    return urlunsplit((parts.scheme, f"{quote(user, safe='')}@{host}", parts.path,
                       urlencode(query, safe="/", quote_via=quote), parts.fragment))
