"""An app's console, live, for the dashboard: its lines from JetStream `SDV_LOGS`
(`sdv.logs.<device>.<app>.<stdout|stderr>`, published by the device's agent) through an ordered
consumer — ephemeral, in memory, no acks, gone with the client — filtered to that one device and
app. A new client gets the newest `backlog` lines of the last `window_s` first, then lines as
they arrive; one that reconnects with `Last-Event-ID` (a stream sequence) goes on after it."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from sdv_events.provisioning import LOGS_STREAM
from sdv_events.subjects import logs_subject

log = structlog.get_logger("sdv.monitor.console")
STREAMS = ("stdout", "stderr")
MAX_LINE_CHARS = 4000


@dataclass(frozen=True)
class ConsoleLine:
    seq: int  # in SDV_LOGS: the SSE id a client resumes from
    stream: str  # stdout | stderr
    ts: float  # when the app wrote it, by the device's clock (0: not said)
    line: str


def console_line(msg: Msg) -> ConsoleLine | None:
    """One message as a line (None: not a console line of an app)."""
    stream = msg.subject.rsplit(".", 1)[-1]
    if stream not in STREAMS:
        return None
    try:
        ts = float((msg.headers or {}).get("Sdv-Ts", "0") or 0)
    except ValueError:
        ts = 0.0
    text = msg.data.decode("utf-8", errors="replace")[:MAX_LINE_CHARS]
    return ConsoleLine(msg.metadata.sequence.stream, stream, ts, text)


class ConsoleTail:
    def __init__(self, js: JetStreamContext, *, backlog: int = 200, window_s: float = 3600.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.js = js
        self.backlog = backlog
        self.window_s = window_s
        self.clock = clock

    def _config(self, after_seq: int | None) -> ConsumerConfig:
        if after_seq is not None:
            return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1)
        return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME,
                              opt_start_time=self.clock() - timedelta(seconds=self.window_s))

    async def follow(self, device_id: str, app: str,
                     after_seq: int | None = None) -> AsyncIterator[ConsoleLine]:
        """The app's lines: the recent ones (or those after `after_seq`), then live ones, until
        the caller stops iterating."""
        sub = await self.js.subscribe(logs_subject(device_id, app, "*"), stream=LOGS_STREAM,
                                      ordered_consumer=True, config=self._config(after_seq))
        # Catching up, only the newest `backlog` lines are kept: a chatty app's hour is not sent.
        recent: deque[ConsoleLine] | None = deque(maxlen=self.backlog) if after_seq is None else None
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except TimeoutError:
                    if recent:  # caught up without being told so: show what there is
                        while recent:
                            yield recent.popleft()
                    recent = None
                    continue
                line = console_line(msg)
                if recent is not None:
                    if line is not None:
                        recent.append(line)
                    if msg.metadata.num_pending == 0:
                        while recent:
                            yield recent.popleft()
                        recent = None
                elif line is not None:
                    yield line
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
