"""Finding the vehicle's KUKSA databroker: the configured address first, then the usual local one.

A probe is one `GetServerInfo` over gRPC (kuksa-client). Apps get the address either way (they
retry on their own); the probe tells the agent — and, through capabilities and heartbeats, the
cloud — whether a databroker actually answers.
"""

from __future__ import annotations

import asyncio
import logging

import structlog

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling

log = structlog.get_logger("sdv.agent.kuksa")
DEFAULT = ("127.0.0.1", 55555)
# kuksa-client logs every channel it opens at INFO; the agent reports what matters itself.
logging.getLogger("kuksa_client").setLevel(logging.WARNING)


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host:
        return text.strip() or DEFAULT[0], DEFAULT[1]
    return host, int(port)


async def probe(host: str, port: int, timeout_s: float = 1.0) -> str | None:
    """The databroker's name and version if one answers at host:port, else None."""
    from kuksa_client.grpc.aio import VSSClient  # grpc is heavy: load it only when probing

    client = VSSClient(host, port, ensure_startup_connection=False)
    try:
        async with asyncio.timeout(timeout_s):
            await client.connect()
        info = await client.get_server_info(timeout=timeout_s)
        return f"{info.name} {info.version}" if info else "unknown databroker"
    except Exception as exc:
        reraise_if_cancelling(exc)
        return None
    finally:
        try:
            async with asyncio.timeout(timeout_s):
                await client.disconnect()
        except Exception:
            log.debug("kuksa_disconnect_failed")


class Databroker:
    """The address handed to apps, kept up to date by `watch()`."""

    def __init__(self, configured: str | None) -> None:
        self.candidates = [parse_address(configured)] if configured else []
        if DEFAULT not in self.candidates:
            self.candidates.append(DEFAULT)
        self.address: tuple[str, int] = self.candidates[0]
        self.found: str | None = None  # "<name> <version> at host:port" while one answers

    def __call__(self) -> tuple[str, int]:
        return self.address

    async def detect(self) -> None:
        for host, port in self.candidates:
            info = await probe(host, port)
            if info is not None:
                if self.found is None or self.address != (host, port):
                    log.info("databroker_found", address=f"{host}:{port}", server=info)
                self.address, self.found = (host, port), f"{info} at {host}:{port}"
                return
        if self.found is not None:
            log.warning("databroker_lost", address=f"{self.address[0]}:{self.address[1]}")
        self.found = None
        self.address = self.candidates[0]

    async def watch(self, interval_s: float = 30.0) -> None:
        while True:
            await self.detect()
            await asyncio.sleep(interval_s)
