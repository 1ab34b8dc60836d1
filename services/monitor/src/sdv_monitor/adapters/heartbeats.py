"""Agents' heartbeats (`sdv.hb.<device>`, core NATS): the latest word per device on its KUKSA
databroker, for the alert rules. In memory (heartbeats are not events); a device's subject is
vouched for by its NATS permissions and must match the body."""

from __future__ import annotations

import time

import msgspec
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sdv_events.schemas.heartbeat import Heartbeat
from sdv_events.schemas.monitor import DeviceDetail

log = structlog.get_logger("sdv.monitor.heartbeats")
MAX_HEARTBEAT_BYTES = 64 * 1024
_decode = msgspec.json.Decoder(Heartbeat).decode


class HeartbeatTracker:
    def __init__(self) -> None:
        self.databroker: dict[str, tuple[bool, float]] = {}  # device → (reachable, when)
        self.latest: dict[str, Heartbeat] = {}  # device → its latest heartbeat
        self.received = 0
        self.refused = 0
        self._sub: Subscription | None = None

    async def start(self, nc: NatsClient) -> None:
        self._sub = await nc.subscribe("sdv.hb.*", cb=self._on)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on(self, msg: Msg) -> None:
        device_id = msg.subject.split(".", 2)[2]
        try:
            if len(msg.data) > MAX_HEARTBEAT_BYTES:
                raise ValueError(f"{len(msg.data)} bytes")
            beat = _decode(msg.data)
            if beat.device_id != device_id:
                raise ValueError("the body names another device")
        except (msgspec.DecodeError, ValueError) as exc:
            self.refused += 1
            if self.refused % 100 == 1:
                log.warning("heartbeat_refused", device_id=device_id[:64], error=str(exc)[:200],
                            refused=self.refused)
            return
        self.received += 1
        self.databroker[device_id] = (beat.databroker is not None, time.monotonic())
        self.latest[device_id] = beat

    def with_live_health(self, detail: DeviceDetail) -> DeviceDetail:
        """The device's view with what its latest heartbeat says (load, per-app cpu/memory)."""
        beat = self.latest.get(detail.device.device_id)
        if beat is None:
            return detail
        apps = []
        for app in detail.apps:
            m = beat.apps.get(app.app)
            apps.append(app if m is None else msgspec.structs.replace(
                app, cpu_pct=m.cpu_pct, rss_bytes=m.rss_bytes, uptime_s=m.uptime_s))
        return msgspec.structs.replace(detail, apps=apps, heartbeat_at=beat.sent_at, metrics=beat.device,
                                       databroker=beat.databroker)

    def without_databroker(self, fresh_s: float) -> list[str]:
        """Devices whose latest (fresh) heartbeat found no databroker."""
        now = time.monotonic()
        return [d for d, (reachable, at) in self.databroker.items() if not reachable and now - at <= fresh_s]

    def databroker_missing(self, expected: set[str], fresh_s: float) -> list[str]:
        """Devices expected to have a databroker whose latest (fresh) heartbeat found none."""
        now = time.monotonic()
        return sorted(d for d in expected if (seen := self.databroker.get(d)) is not None
                      and not seen[0] and now - seen[1] <= fresh_s)
