"""How every client of the suite's NATS speaks TLS: it pins the fleet's CA and, on a `tls://`
URL, starts TLS with its first byte.

Pinning: with a CA file (`SDV_NATS_CA`, the agent's `--nats-ca`) the client trusts that CA and
nothing else — not the system's authorities — so only the suite's own server certificate is
accepted. Without one, a server that requires TLS is checked against the system's authorities,
which refuse the suite's self-signed CA: a clear "certificate verify failed", never a silent
plaintext connection.

TLS first: nats-py otherwise reads the server's INFO in plaintext and upgrades only when INFO
asks for it, so a machine in the middle could answer "no TLS" and read the CONNECT. On `tls://`
the handshake comes first (the server's `handshake_first`), and nothing is ever sent unencrypted.
A `nats://` URL keeps the old behaviour (a plain development server keeps working unchanged).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

CA_ENV = "SDV_NATS_CA"
TLS_SCHEME = "tls"


class NatsCaError(ValueError):
    """The CA file to pin cannot be used; the message names it and why."""


def ca_from_env(env: Mapping[str, str] | None = None) -> str | None:
    return (os.environ if env is None else env).get(CA_ENV) or None


def pinned_context(ca_file: str | Path) -> ssl.SSLContext:
    """A client context that trusts the CA in `ca_file` only, and checks the server's name."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except FileNotFoundError:
        raise NatsCaError(f"no CA certificate at {ca_file} ({CA_ENV})") from None
    except (OSError, ssl.SSLError) as exc:
        raise NatsCaError(f"{ca_file} is not a PEM CA certificate ({CA_ENV}): {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def uses_tls_scheme(servers: str | Sequence[str]) -> bool:
    urls = [servers] if isinstance(servers, str) else list(servers)
    return any(urlparse(url).scheme == TLS_SCHEME for url in urls)


def tls_options(servers: str | Sequence[str], ca_file: str | Path | None) -> dict[str, Any]:
    """Keyword arguments for `nats.connect`: the pinned context when a CA is given, and TLS
    first on `tls://` URLs. Empty for a `nats://` URL without a CA."""
    options: dict[str, Any] = {}
    if ca_file:
        options["tls"] = pinned_context(ca_file)
    if uses_tls_scheme(servers):
        options["tls_handshake_first"] = True
    return options


def tls_hint(exc: BaseException, ca_file: str | Path | None) -> str:
    """A sentence to add to a connection error that is the server's certificate being refused."""
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, ssl.SSLCertVerificationError) and "CERTIFICATE_VERIFY_FAILED" not in text:
        return ""
    if ca_file:
        return f" (the server's certificate is not signed by the CA in {ca_file})"
    return (f" (the server's certificate is signed by a CA this client does not trust: set {CA_ENV} "
            "to the suite's ca.pem, e.g. <data-dir>/nats/tls/ca.pem of `sdv up`)")
