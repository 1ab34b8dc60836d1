"""Interactive ops on one device: `sdv.device.<device_id>.ops.<op>` (request/reply in the shared
command wire format of `sdv_events.bus.rpc`; typed errors `not_found`, `op_refused`,
`illegal_transition`, `invalid_request`).

  pause | resume | stop | start | restart   AppOp      → AppStatus
  stdin                                     StdinOp    → AppStatus
  logs                                      LogsQuery  → LogLines   (`search`: an SQLite FTS5 query
                                                                     over the device's console history)

The agent serves them; the CLI and other services send them. Ops act on the device now; the
desired state still wins at the next change of it (a paused app stays paused until resumed or
until a new desired revision says otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

APP_OPS = ("pause", "resume", "stop", "start", "restart")
ALL_OPS = (*APP_OPS, "stdin", "logs")
STDIN_MAX_BYTES = 64 * 1024


class AppOp(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    app: str


class StdinOp(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    app: str
    data: Annotated[str, msgspec.Meta(max_length=STDIN_MAX_BYTES)]


class LogsQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    app: str | None = None
    lines: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 50
    stream: Literal["stdout", "stderr"] | None = None
    search: str | None = None


class AppStatus(msgspec.Struct, frozen=True):
    app: str
    state: str | None
    version: str | None
    pid: int | None
    healthy: bool
    held: str | None  # an op holds the app in this state ("paused", "stopped") against the desired one


class LogEntry(msgspec.Struct, frozen=True):
    id: int
    app: str
    stream: str
    ts: float
    line: str


class LogLines(msgspec.Struct, frozen=True):
    lines: list[LogEntry]


# What each op takes and answers, as the agent serves them (the AsyncAPI document's
# `sdv.device.<device_id>.ops.<op>` channels are generated from this table).
OP_TYPES: Mapping[str, tuple[type[msgspec.Struct], type[msgspec.Struct]]] = {
    **{op: (AppOp, AppStatus) for op in APP_OPS},
    "stdin": (StdinOp, AppStatus),
    "logs": (LogsQuery, LogLines),
}
