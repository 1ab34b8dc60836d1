"""The embedded NATS of `sdv up` requires TLS, and its clients pin the CA `sdv up` made: a client
that trusts only the system's authorities, or another CA, or expects another name, is refused
before it says anything; a client speaking plaintext gets nothing. (Services answering ping over
TLS: test_suite_security.py; the CA kept across restarts: its last test.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nats
import nats.errors
import pytest

from sdv_client.suite import Suite
from sdv_events.auth.certificates import ensure_server_tls
from sdv_events.auth.client_tls import tls_options

pytestmark = pytest.mark.timeout(60)
SDV = Path(sys.executable).parent / "sdv"


@pytest.fixture(scope="module")
async def suite(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> AsyncIterator[Suite]:
    """Only the servers: what is under test is NATS's TLS, not the services."""
    data_dir = tmp_path_factory.mktemp("sdv-up-tls")
    async with Suite(data_dir=data_dir, nats_url=None, database_url=database_url, services=()) as running:
        yield running


async def _connect(suite: Suite, **options: Any) -> nats.NATS:
    return await nats.connect(str(suite.nats_url), user_credentials=suite.nats_creds, allow_reconnect=False,
                              connect_timeout=2, max_reconnect_attempts=1, **options)


async def test_sdv_up_nats_requires_tls_and_clients_pin_its_ca(suite: Suite, tmp_path: Path) -> None:
    url = str(suite.nats_url)
    assert url.startswith("tls://127.0.0.1:")
    assert suite.nats_ca == str(suite.dir / "nats" / "tls" / "ca.pem")
    assert all(suite._service_env(n)["SDV_NATS_CA"] == suite.nats_ca for n in ("packager", "registry"))

    nc = await _connect(suite, **tls_options(url, suite.nats_ca))
    try:
        # A round trip over TLS: a request the server itself answers (no service runs here).
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("sdv.cmd.registry.ping", b"{}", timeout=10)
    finally:
        await nc.close()

    # The system's authorities do not vouch for the suite's CA …
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await _connect(suite, **tls_options(url, None), error_cb=_ignore)
    # … nor does another suite's CA …
    foreign = ensure_server_tls(tmp_path / "foreign")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await _connect(suite, **tls_options(url, foreign.ca_file), error_cb=_ignore)
    # … and the right CA is not enough for another name.
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        await _connect(suite, **tls_options(url, suite.nats_ca), tls_hostname="nats.example.com",
                       error_cb=_ignore)


async def test_a_plaintext_client_gets_nothing_from_sdv_up_nats(suite: Suite) -> None:
    """A client that never starts TLS: the server announces TLS is required and closes the
    connection at its first plaintext command, credentials or not."""
    where = urlparse(str(suite.nats_url))
    assert suite.nats_creds is not None
    creds = Path(suite.nats_creds)

    def talk_plaintext() -> tuple[dict[str, Any], bytes]:
        jwt = creds.read_text().split("-----BEGIN NATS USER JWT-----\n")[1].split("\n")[0]
        with socket.create_connection((where.hostname, where.port), timeout=5) as sock:
            info = sock.recv(65536)
            sock.sendall(b"CONNECT " + json.dumps({"jwt": jwt, "verbose": True}).encode()
                         + b"\r\nPING\r\nSUB > 1\r\n")
            answer = b""
            with contextlib.suppress(ConnectionResetError):  # closed, with or without a word
                while chunk := sock.recv(65536):
                    answer += chunk
            return json.loads(info.split(b" ", 1)[1]), answer

    info, answer = await asyncio.to_thread(talk_plaintext)

    assert info["tls_required"] is True
    assert b"PONG" not in answer
    assert b"+OK" not in answer


def test_sdv_ping_without_the_ca_says_to_set_sdv_nats_ca(suite: Suite) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SDV_NATS_CA"}
    env.update(SDV_NATS_URL=str(suite.nats_url), SDV_NATS_CREDS=str(suite.nats_creds))

    ping = subprocess.run([str(SDV), "ping", "--json"], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    devices = subprocess.run([str(SDV), "devices", "count", "--json"], env=env, capture_output=True,
                             text=True, timeout=30, check=False)

    assert ping.returncode == 1, ping.stdout + ping.stderr
    error = json.loads(ping.stdout)["error"]
    assert "certificate verify failed" in error
    assert "set SDV_NATS_CA to the suite's ca.pem" in error
    assert devices.returncode == 3, devices.stdout + devices.stderr
    assert "set SDV_NATS_CA to the suite's ca.pem" in json.loads(devices.stdout)["error"]


async def _ignore(_: Exception) -> None:
    """nats-py would log a traceback for each refused connection: the test asserts the raise."""


async def test_a_machine_in_the_middle_answering_without_tls_never_sees_the_credentials(suite: Suite) -> None:
    """Someone between client and server answers as a NATS that needs no TLS. A client on a
    `tls://` URL starts TLS with its first byte, so it sends nothing but a TLS hello and fails on
    the impostor's plaintext — no CONNECT, no JWT, no signed nonce."""
    received = bytearray()

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"mitm","version":"2.15.1","proto":1,"max_payload":1048576,'
                     b'"auth_required":true,"tls_required":false,"nonce":"abc"}\r\n')
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received.extend(chunk)
        writer.close()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"tls://127.0.0.1:{port}"
    try:
        with pytest.raises(Exception):  # noqa: B017, PT011 - the kind depends on where the TLS hello breaks
            await nats.connect(url, user_credentials=suite.nats_creds, allow_reconnect=False, connect_timeout=2,
                               max_reconnect_attempts=1, error_cb=_ignore, **tls_options(url, suite.nats_ca))
    finally:
        server.close()
        await server.wait_closed()

    assert received[:1] == b"\x16"  # a TLS handshake record
    assert b"CONNECT" not in received
    assert b"eyJ" not in received  # no JWT
