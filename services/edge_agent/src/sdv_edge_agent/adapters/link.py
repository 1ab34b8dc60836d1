"""The agent's one NATS connection: made in the background, retried forever, watched.

A vehicle boots without network as often as with it: the agent runs its apps from SQLite first
and connects when it can. `connected` is set while the link is up; `on_connect` hooks run after
the first connection and after every reconnect (re-subscribe the desired-state watch, flush what
was buffered). The inbox prefix carries the device id, as the device's NATS permissions require.

nats-py gives a connection up for good when the server ends it with an error instead of just
dropping it — which is what happens when the device's JWT expires while connected — so the link
then makes a new client (hooks run again). When the server refuses the credentials themselves
(expired, revoked, or minted under a chain of trust made anew), `refused` is set: enrolment
takes over (adapters/enrolment.py), and the retries pick up the credentials file it rewrites.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_events.auth.client_tls import tls_hint, tls_options

log = structlog.get_logger("sdv.agent.link")
Hook = Callable[[], Awaitable[None]]
_REFUSALS = ("authorization violation", "authentication expired", "authentication revoked")


def is_refusal(exc: BaseException) -> bool:
    """The server refused these credentials (not the network, not a permission)."""
    text = str(exc).lower()
    return any(r in text for r in _REFUSALS)


class NatsLink:
    def __init__(self, url: str, device_id: str, *, creds: Path | None = None, ca: Path | None = None,
                 request_timeout_s: float = 5.0) -> None:
        self.url = url
        self.device_id = device_id
        self.creds = creds
        self.ca = ca  # the fleet CA to pin (sdv_events.auth.client_tls)
        self.request_timeout_s = request_timeout_s
        self.connected = asyncio.Event()
        self.refused = asyncio.Event()
        self.nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._hooks: list[Hook] = []
        self._hook_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._stopping = False

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("NATS is not connected yet")
        return self._js

    def on_connect(self, hook: Hook) -> None:
        self._hooks.append(hook)

    @property
    def is_up(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def run(self) -> None:
        """Connect (retrying with backoff until it works), then keep a client alive."""
        while not self._stopping:
            self.nc = await self._connect()
            self._js = self.nc.jetstream(timeout=self.request_timeout_s)
            log.info("nats_connected", url=self.url)
            await self._up()
            await self._closed.wait()  # the client reconnects by itself unless it gave up
            self._closed.clear()
            if self._stopping:
                return
            self.connected.clear()
            log.warning("nats_connection_closed", reason="the server ended the session",
                        action="connecting anew")
            await asyncio.sleep(0.5)

    async def _connect(self) -> NatsClient:
        delay = 0.2
        while True:
            try:
                return await nats.connect(
                    servers=[self.url], name=f"sdv-agent-{self.device_id}",
                    inbox_prefix=f"_INBOX.{self.device_id}", connect_timeout=2,
                    reconnect_time_wait=0.5, max_reconnect_attempts=-1, ping_interval=5,
                    max_outstanding_pings=2, allow_reconnect=True,
                    user_credentials=str(self.creds) if self.creds else None,
                    error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected, closed_cb=self._on_closed,
                    **tls_options(self.url, self.ca),
                )
            except Exception as exc:
                reraise_if_cancelling(exc)
                if is_refusal(exc):
                    self.refused.set()
                log.info("nats_connect_failed", url=self.url,
                         reason=(str(exc) or type(exc).__name__) + tls_hint(exc, self.ca),
                         retry_in_s=round(delay, 1))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _up(self) -> None:
        self.connected.set()
        self.refused.clear()
        if self._hook_task is not None and not self._hook_task.done():
            self._hook_task.cancel()
        self._hook_task = asyncio.create_task(self._run_hooks())

    async def _run_hooks(self) -> None:
        for hook in self._hooks:
            try:
                await hook()
            except Exception as exc:
                reraise_if_cancelling(exc)
                log.warning("on_connect_hook_failed", hook=getattr(hook, "__qualname__", hook),
                            reason=f"{type(exc).__name__}: {exc}")

    async def _on_error(self, exc: Exception) -> None:
        if is_refusal(exc):
            self.refused.set()
        log.warning("nats_error", reason=f"{type(exc).__name__}: {exc}")

    async def _on_disconnected(self) -> None:
        self.connected.clear()
        log.warning("nats_disconnected")

    async def _on_reconnected(self) -> None:
        log.info("nats_reconnected")
        await self._up()

    async def _on_closed(self) -> None:
        self._closed.set()

    async def close(self) -> None:
        self._stopping = True
        self._closed.set()
        if self._hook_task is not None:
            self._hook_task.cancel()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.nc.drain()
