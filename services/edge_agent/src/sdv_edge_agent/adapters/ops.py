"""Serves the interactive ops on `sdv.device.<device_id>.ops.<op>`; the requests and replies are
the shared contract in `sdv_events.schemas.device_ops`.
Each request is handled in a task of its own, so a slow stop does not hold up a `logs` call.

Only requests are served. Every device shares the devices account, and nats-server does not
check a request's reply subject against the requester's permissions, so another device can make
the server deliver a JetStream reply onto this device's ops subjects: such a message has no
reply subject of its own (services always send requests), and it is dropped unread.
"""

from __future__ import annotations

import asyncio
import sqlite3

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from sdv_edge_agent.adapters.link import NatsLink
from sdv_edge_agent.adapters.store import AgentStore
from sdv_edge_agent.application import Agent
from sdv_edge_agent.domain.records import AppRecord
from sdv_events.bus.rpc import InvalidRequest, ReplyError, RequestInfo, serve_one
from sdv_events.bus.tracing import span, trace_from_headers
from sdv_events.codec import encode
from sdv_events.schemas.device_ops import (
    ALL_OPS,
    APP_OPS,
    AppOp,
    AppStatus,
    LogEntry,
    LogLines,
    LogsQuery,
    StdinOp,
)
from sdv_events.subjects import ops_subject

log = structlog.get_logger("sdv.agent.ops")
def status(record: AppRecord) -> AppStatus:
    shown = record.shown
    return AppStatus(app=record.name, state=record.state.value if record.state else None,
                     version=shown.version if shown else None, pid=record.pid,
                     healthy=record.healthy, held=record.held)


class OpsServer:
    def __init__(self, link: NatsLink, agent: Agent, store: AgentStore, device_id: str) -> None:
        self.link = link
        self.agent = agent
        self.store = store
        self.subject = ops_subject(device_id, "*")
        self._subscribed_on: NatsClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def subscribe(self) -> None:
        """Once per client: it re-subscribes core subscriptions by itself after a reconnect (the
        link makes a new client only when the old one gave up)."""
        nc = self.link.nc
        if nc is None or nc is self._subscribed_on:
            return
        await nc.subscribe(self.subject, cb=self._on_msg)
        self._subscribed_on = nc

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.reply:
            log.warning("op_without_reply_dropped", subject=msg.subject)
            return
        task = asyncio.create_task(self._traced(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _traced(self, msg: Msg) -> None:
        """The op in a span of the sender's trace (`sdv app pause` → this device)."""
        with span(f"op {msg.subject.rsplit('.', 1)[-1]}", parent=trace_from_headers(msg.headers)):
            await self._serve(msg)

    async def _serve(self, msg: Msg) -> None:
        op = msg.subject.rsplit(".", 1)[-1]
        headers = msg.headers or {}
        if op in APP_OPS:
            async def app_op(req: AppOp, info: RequestInfo) -> AppStatus:
                return status(await self.agent.op(req.app, op))

            reply = await serve_one(msg.data, msg.subject, headers, AppOp, app_op)
        elif op == "stdin":
            async def stdin(req: StdinOp, info: RequestInfo) -> AppStatus:
                return status(await self.agent.op(req.app, "stdin", req.data.encode()))

            reply = await serve_one(msg.data, msg.subject, headers, StdinOp, stdin)
        elif op == "logs":
            reply = await serve_one(msg.data, msg.subject, headers, LogsQuery, self._logs)
        else:
            reply = encode(ReplyError(InvalidRequest.code, f"unknown op {op!r}; ops: {', '.join(ALL_OPS)}"))
        await msg.respond(reply)
        log.info("op", op=op)

    async def _logs(self, req: LogsQuery, info: RequestInfo) -> LogLines:
        if req.search:
            try:
                rows = self.store.search_logs(req.search, req.app, req.lines)
            except sqlite3.OperationalError as exc:
                raise InvalidRequest(f"search {req.search!r} is not a valid FTS5 query: {exc}") from None
        else:  # no app: the device's last lines, whichever app wrote them
            rows = self.store.tail_logs(req.app, req.lines, req.stream)
        return LogLines([LogEntry(r.id, r.app, r.stream, r.ts, r.line) for r in rows])
