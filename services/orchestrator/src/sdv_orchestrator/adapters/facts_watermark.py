"""Up to when devices' facts have been handled: the time the ticker judges deadlines against.

A device may be timed out only once every fact that could still save it has been handled. The
facts consumer is a durable JetStream consumer; JetStream says how far it got. At time t the
watermark samples the stream's last sequence L; once the consumer has acknowledged every
matching message up to L (its ack floor reached L), or has nothing pending nor unacknowledged
at all, every fact published before t has been handled: the watermark moves to t. A fact
that failed, waits in a retry or was never fetched holds it back — so an orchestrator,
PostgreSQL or NATS outage never turns a report into a timeout, and the ticker and the facts
consumer cannot race.

After the bus was unreachable (or the process started) the watermark holds still for
`grace_s`: devices' agents reconnect and publish what they could not meanwhile; a fact they
publish then may have happened before a deadline that passed during the outage.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from nats.js import JetStreamContext

from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.supervision import Status

log = structlog.get_logger("sdv.orchestrator.watermark")
MAX_SAMPLES = 600
# Health turns red once the watermark could not be read for this long (not at a start's blip,
# before the facts consumer exists).
UNHEALTHY_AFTER_S = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class FactsWatermark:
    def __init__(
        self,
        js: JetStreamContext,
        durable: str,
        *,
        stream: str = EVENTS_STREAM,
        grace_s: float = 10.0,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.js = js
        self.durable = durable
        self.stream = stream
        self.grace_s = grace_s
        self.clock = clock
        self.monotonic = monotonic
        self.value: datetime | None = None  # every fact published before it has been handled
        self._samples: deque[tuple[datetime, int]] = deque(maxlen=MAX_SAMPLES)
        self._reachable_since: float | None = None
        self._reached_once = False
        self._failing_since: float | None = None
        self.last_error: str | None = None

    async def __call__(self) -> datetime | None:
        """Sample JetStream once and return the watermark (None: not known yet)."""
        t = self.clock()
        try:
            last_seq = int((await self.js.stream_info(self.stream)).state.last_seq)
            info = await self.js.consumer_info(self.stream, self.durable)
        except Exception as exc:  # the bus away, or the consumer being (re)created
            error = f"{type(exc).__name__}: {exc}"[:300]
            if self.last_error is None:
                # At start the facts consumer may not exist yet: worth a warning only later.
                (log.warning if self._reached_once else log.info)(
                    "facts_watermark_unknown", durable=self.durable, error=error
                )
            self.last_error = error
            if self._failing_since is None:
                self._failing_since = self.monotonic()
            self._reachable_since = None
            self._samples.clear()
            return self.value
        if self.last_error is not None:
            log.info("facts_watermark_back", durable=self.durable, grace_s=self.grace_s)
            self.last_error = None
        self._reached_once = True
        self._failing_since = None
        now = self.monotonic()
        if self._reachable_since is None:
            self._reachable_since = now
        if now - self._reachable_since < self.grace_s:
            return self.value  # agents may still be publishing what the outage held back
        self._samples.append((t, last_seq))
        reached: datetime | None = None
        if int(info.num_pending or 0) == 0 and int(info.num_ack_pending or 0) == 0:
            reached = t
            self._samples.clear()
        floor = int(info.ack_floor.stream_seq) if info.ack_floor is not None else 0
        while self._samples and self._samples[0][1] <= floor:
            sampled = self._samples.popleft()[0]
            reached = sampled if reached is None else max(reached, sampled)
        if reached is not None and (self.value is None or reached > self.value):
            self.value = reached
        return self.value

    def status(self) -> Status:
        detail: dict[str, int | float | str] = {"samples": len(self._samples)}
        if self.value is not None:
            detail["facts_handled_until_age_s"] = round((self.clock() - self.value).total_seconds(), 3)
        if self.last_error is not None and self._failing_since is not None:
            failing_s = self.monotonic() - self._failing_since
            detail["facts_watermark_failing_s"] = round(failing_s, 3)
            if failing_s >= UNHEALTHY_AFTER_S:
                return Status(
                    False,
                    f"cannot tell how far devices' facts are handled for {failing_s:.0f} s: "
                    f"{self.last_error}",
                    detail,
                )
        return Status(True, "", detail)
