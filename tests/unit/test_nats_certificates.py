"""The suite's NATS TLS files without a server: made once and reused, renewed before they expire
(the CA only when it must be, since every client pins it), keys owner-only; and the options
every client connects with."""

from __future__ import annotations

import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from sdv_events.auth.certificates import (
    CA_LIFETIME,
    SERVER_LIFETIME,
    CertificateError,
    ensure_server_tls,
)
from sdv_events.auth.client_tls import NatsCaError, pinned_context, tls_options

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _names(cert_file: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in alt]


def test_certificates_are_made_once_and_reused(tmp_path: Path) -> None:
    first = ensure_server_tls(tmp_path, now=NOW)
    made = _files(tmp_path)
    again = ensure_server_tls(tmp_path, now=NOW + timedelta(days=300))

    assert again == first
    assert _files(tmp_path) == made
    assert sorted(made) == ["ca-key.pem", "ca.pem", "server-key.pem", "server.pem"]
    assert _names(first.cert_file) == ["127.0.0.1", "localhost"]


def test_keys_are_owner_only_and_certificates_readable(tmp_path: Path) -> None:
    ensure_server_tls(tmp_path, now=NOW)

    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}

    assert modes == {"ca-key.pem": 0o600, "server-key.pem": 0o600, "ca.pem": 0o644, "server.pem": 0o644}


def test_a_server_certificate_near_its_expiry_is_renewed_by_the_same_ca(tmp_path: Path) -> None:
    tls = ensure_server_tls(tmp_path, now=NOW)
    before = _files(tmp_path)

    ensure_server_tls(tmp_path, now=NOW + SERVER_LIFETIME - timedelta(days=29))

    after = _files(tmp_path)
    assert after["ca.pem"] == before["ca.pem"]  # pinned clients keep working
    assert after["server.pem"] != before["server.pem"]
    assert after["server-key.pem"] != before["server-key.pem"]
    renewed = x509.load_pem_x509_certificate(after["server.pem"])
    renewed.verify_directly_issued_by(x509.load_pem_x509_certificate(tls.ca_file.read_bytes()))
    assert renewed.not_valid_after_utc > NOW + SERVER_LIFETIME


def test_a_ca_near_its_expiry_is_replaced_with_its_server_certificate(tmp_path: Path) -> None:
    ensure_server_tls(tmp_path, now=NOW)
    before = _files(tmp_path)

    ensure_server_tls(tmp_path, now=NOW + CA_LIFETIME - timedelta(days=10))

    after = _files(tmp_path)
    assert after["ca.pem"] != before["ca.pem"]
    assert after["server.pem"] != before["server.pem"]


def test_a_new_host_gets_a_new_server_certificate_from_the_same_ca(tmp_path: Path) -> None:
    tls = ensure_server_tls(tmp_path, now=NOW)
    ca = tls.ca_file.read_bytes()

    ensure_server_tls(tmp_path, ["nats", "10.0.0.7"], now=NOW)

    assert tls.ca_file.read_bytes() == ca
    assert _names(tls.cert_file) == ["127.0.0.1", "localhost", "nats", "10.0.0.7"]


def test_a_server_certificate_not_signed_by_the_ca_is_replaced(tmp_path: Path) -> None:
    tls = ensure_server_tls(tmp_path / "suite", now=NOW)
    foreign = ensure_server_tls(tmp_path / "foreign", now=NOW)
    tls.cert_file.write_bytes(foreign.cert_file.read_bytes())
    tls.key_file.write_bytes(foreign.key_file.read_bytes())

    ensure_server_tls(tmp_path / "suite", now=NOW)

    x509.load_pem_x509_certificate(tls.cert_file.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(tls.ca_file.read_bytes()))


@pytest.mark.parametrize("host", ["", "a b", "-nats", "nats_1", "x" * 64, "tls://nats"])
def test_a_host_that_is_no_name_or_address_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(CertificateError, match="neither an IP address nor a DNS name"):
        ensure_server_tls(tmp_path, [host], now=NOW)


def test_clients_pin_the_ca_and_start_tls_first_on_tls_urls(tmp_path: Path) -> None:
    tls = ensure_server_tls(tmp_path, now=NOW)

    pinned = tls_options("tls://127.0.0.1:4222", tls.ca_file)

    assert pinned["tls_handshake_first"] is True
    context: ssl.SSLContext = pinned["tls"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    # The pinned CA and nothing else: not the system's authorities.
    [ca] = context.get_ca_certs()
    assert dict(rdn[0] for rdn in ca["subject"])["organizationName"] == "SDV Fleet"
    # A plain development server is connected to as before.
    assert tls_options("nats://127.0.0.1:4222", None) == {}
    assert tls_options("tls://127.0.0.1:4222", None) == {"tls_handshake_first": True}


def test_a_missing_or_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NatsCaError, match=r"no CA certificate at .*nope\.pem \(SDV_NATS_CA\)"):
        pinned_context(tmp_path / "nope.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(NatsCaError, match="is not a PEM CA certificate"):
        pinned_context(tmp_path / "junk.pem")
