"""The HTTP API's listening socket: what its accepted connections inherit."""

from __future__ import annotations

import socket

from sdv_monitor.adapters.http_api import listen


def test_api_connections_send_small_responses_at_once_without_waiting_for_acks() -> None:
    # Without TCP_NODELAY, a response written in two parts (head, then body) waits for the
    # client's delayed ACK: 40 ms on every request, measured by bench/monitor.py.
    server = listen("127.0.0.1", 0)
    try:
        server.setblocking(True)
        with socket.create_connection(server.getsockname()[:2], timeout=5):
            accepted, _ = server.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.close()
