"""The suite's own TLS for NATS: a self-signed CA and a server certificate it signs, kept as PEM
files in one directory and reused across runs.

Clients pin the CA (`client_tls.py`): they trust this CA and nothing else, so the suite needs no
public certificate authority, and a server certificate signed by anyone else is refused. The
server requires TLS from every client but asks none for a certificate (`verify` stays off):
clients prove who they are with their NATS user JWT (operator mode), inside the encrypted
connection.

  ca.pem, ca-key.pem            the CA (10 years); the key is owner-only and never leaves here
  server.pem, server-key.pem    the server (1 year), for 127.0.0.1, localhost and the hosts asked for

A set is reused while the CA and the server certificate stay valid for more than `RENEW_BEFORE`,
the server certificate is signed by this CA and names every host asked for. Otherwise the server
certificate is made again — and the CA too when it expires soon or cannot be read, after which
every client must be given the new `ca.pem`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)
# Clocks of devices and servers disagree a little; a certificate valid from "now" would be
# refused by a client whose clock is behind.
BACKDATE = timedelta(hours=1)
_DNS_NAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
Name = x509.DNSName | x509.IPAddress


class CertificateError(ValueError):
    """A host name that cannot go into a certificate."""


@dataclass(frozen=True)
class ServerTls:
    """The files of one CA and the server certificate it signed."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_FILE

    @property
    def cert_file(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key_file(self) -> Path:
        return self.directory / KEY_FILE

    def config_block(self, cert_file: str | None = None, key_file: str | None = None) -> str:
        """The nats-server `tls` block; other paths when the server sees the files elsewhere
        (a container)."""
        return server_tls_block(cert_file or str(self.cert_file), key_file or str(self.key_file))


def server_tls_block(cert_file: str, key_file: str) -> str:
    return "\n".join([
        "# TLS for every client (sdv_events.auth.certificates). No client certificates: clients",
        "# authenticate with their user JWT. Clients that start TLS at once (ours: nothing in",
        "# plaintext that could be tampered with) get the handshake first; others get INFO after",
        "# 300ms and must upgrade before they can send anything.",
        "tls {",
        f"  cert_file: {_quoted(cert_file)}",
        f"  key_file: {_quoted(key_file)}",
        "  handshake_first: 300ms",
        "  timeout: 2",
        "}",
    ])


def ensure_server_tls(directory: Path, hosts: Iterable[str] = (), *,
                      now: datetime | None = None) -> ServerTls:
    """The CA and server certificate in `directory` for 127.0.0.1, localhost and `hosts`: the
    existing ones when still good (see the module doc), new ones otherwise."""
    now = now or datetime.now(UTC)
    names = _names([*LOCAL_HOSTS, *hosts])
    tls = ServerTls(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = _usable_ca(tls, now)
    if ca is None:
        ca = _new_ca(now)
        _write_key(tls.directory / CA_KEY_FILE, ca[1])
        _write_cert(tls.ca_file, ca[0])
    elif _server_cert_is_good(tls, ca[0], names, now):
        return tls
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(tls.key_file, key)
    _write_cert(tls.cert_file, _server_cert(ca, key, names, now))
    return tls


def _quoted(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _names(hosts: Iterable[str]) -> list[Name]:
    names: list[Name] = []
    for host in dict.fromkeys(h.strip() for h in hosts):
        try:
            name: Name = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            if not _DNS_NAME.fullmatch(host) or len(host) > 253:
                raise CertificateError(f"{host!r} is neither an IP address nor a DNS name") from None
            name = x509.DNSName(host.lower())
        names.append(name)
    return names


def _usable_ca(tls: ServerTls, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
        key = serialization.load_pem_private_key((tls.directory / CA_KEY_FILE).read_bytes(), None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return (cert, key) if cert.not_valid_after_utc - now > RENEW_BEFORE else None


def _server_cert_is_good(tls: ServerTls, ca: x509.Certificate, names: list[Name], now: datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
        key = serialization.load_pem_private_key(tls.key_file.read_bytes(), None)
        cert.verify_directly_issued_by(ca)
        alt_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return (key.public_key() == cert.public_key() and cert.not_valid_after_utc - now > RENEW_BEFORE
            and all(name in alt_names for name in names))


def _new_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own per CA: two suites' CAs are never mistaken for one another.
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SDV Fleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"SDV Fleet NATS CA {secrets.token_hex(4)}")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _server_cert(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], key: ec.EllipticCurvePrivateKey,
                 names: list[Name], now: datetime) -> x509.Certificate:
    ca_cert, ca_key = ca
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SDV Fleet"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "SDV Fleet NATS")])
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=crl_sign, encipher_only=False,
                         decipher_only=False)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _replace(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _replace(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Written beside, then renamed: a server or client never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)
