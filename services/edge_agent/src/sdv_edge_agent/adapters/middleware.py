"""The vehicle's middleware as apps see it: the KUKSA databroker (found by `kuksa.py`) and the
vehicle's MQTT broker (found here), handed to every app in both conventions it may expect:

- KUKSA / kuksa-client: `KUKSA_DATA_BROKER_ADDRESS` + `KUKSA_DATA_BROKER_PORT`;
- Eclipse Velocitas (velocitas-sdk, native middleware): `SDV_MIDDLEWARE_TYPE=native`,
  `SDV_VEHICLEDATABROKER_ADDRESS=grpc://host:port` (it parses a URL: a bare host:port fails) and
  `SDV_MQTT_ADDRESS=mqtt://host:port` (`VehicleApp.run()` connects there first).

The MQTT broker is the configured address, else the usual local one (127.0.0.1:1883); a probe is
one MQTT CONNECT answered by a CONNACK. Like the databroker, apps get the address either way (they
retry on their own); the probe says — through the capabilities — whether one answers, so a
rollout of an app that needs MQTT leaves out vehicles without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling

log = structlog.get_logger("sdv.agent.mqtt")
DEFAULT_MQTT = ("127.0.0.1", 1883)
# MQTT 3.1.1 CONNECT: protocol "MQTT", level 4, clean session, keep-alive 10 s, client id.
_CLIENT_ID = b"sdv-agent-probe"
_CONNECT = (b"\x10" + bytes([12 + len(_CLIENT_ID)]) + b"\x00\x04MQTT\x04\x02\x00\x0a"
            + len(_CLIENT_ID).to_bytes(2, "big") + _CLIENT_ID)
_CONNACK = 0x20
_DISCONNECT = b"\xe0\x00"


def parse_mqtt_address(text: str) -> tuple[str, int]:
    """`mqtt://host:1883`, `tcp://host:1883`, `host:1883` or `host` → (host, port)."""
    rest = text.strip().split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        return rest.strip("[]") or DEFAULT_MQTT[0], DEFAULT_MQTT[1]
    return host.strip("[]") or DEFAULT_MQTT[0], int(port)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def url(scheme: str, address: tuple[str, int]) -> str:
    return f"{scheme}://{_host(address[0])}:{address[1]}"


def vehicle_env(databroker: tuple[str, int], mqtt: tuple[str, int]) -> dict[str, str]:
    """The variables every app gets for the vehicle's middleware."""
    host, port = databroker
    return {
        "KUKSA_DATA_BROKER_ADDRESS": host,
        "KUKSA_DATA_BROKER_PORT": str(port),
        "SDV_MIDDLEWARE_TYPE": "native",
        "SDV_VEHICLEDATABROKER_ADDRESS": url("grpc", databroker),
        "SDV_MQTT_ADDRESS": url("mqtt", mqtt),
    }


async def probe_mqtt(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when an MQTT broker answers a CONNECT at host:port (any CONNACK: a broker that wants
    credentials is still a broker)."""
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(_CONNECT)
            await writer.drain()
            answer = await reader.readexactly(4)
            writer.write(_DISCONNECT)
            await writer.drain()
        return answer[0] == _CONNACK and answer[1] == 2
    except Exception as exc:
        reraise_if_cancelling(exc)
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class MqttBroker:
    """The MQTT address handed to apps, kept up to date by `watch()`."""

    def __init__(self, configured: str | None) -> None:
        self.candidates = [parse_mqtt_address(configured)] if configured else []
        if DEFAULT_MQTT not in self.candidates:
            self.candidates.append(DEFAULT_MQTT)
        self.address: tuple[str, int] = self.candidates[0]
        self.found: str | None = None  # mqtt://host:port while a broker answers there

    def __call__(self) -> tuple[str, int]:
        return self.address

    async def detect(self) -> None:
        for candidate in self.candidates:
            if await probe_mqtt(*candidate):
                if self.found is None or self.address != candidate:
                    log.info("mqtt_broker_found", address=url("mqtt", candidate))
                self.address, self.found = candidate, url("mqtt", candidate)
                return
        if self.found is not None:
            log.warning("mqtt_broker_lost", address=self.found)
        self.found = None
        self.address = self.candidates[0]

    async def watch(self, interval_s: float = 30.0) -> None:
        while True:
            await self.detect()
            await asyncio.sleep(interval_s)
