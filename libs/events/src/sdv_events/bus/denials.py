"""The server's refusals of what a connection may publish, as errors a caller can act on.

nats-server answers a publish its sender's permissions do not allow with
`-ERR 'Permissions Violation for Publish to "<subject>"'` and drops the message. nats-py hands
that only to the connection's error callback (subject lower-cased); the request itself would
wait for its whole timeout and end as a timeout. A connection made with
`PermissionDenials.error_cb` (and `attach`ed) lets `CommandClient` end such a request at once
with `Forbidden`, naming the subject — an operator whose role does not include the command
learns that from the server within a round trip.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient

T = TypeVar("T")
ErrorCallback = Callable[[Exception], Awaitable[None]]
_VIOLATION = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)
_attached: weakref.WeakKeyDictionary[NatsClient, PermissionDenials] = weakref.WeakKeyDictionary()


class PublishDenied(Exception):
    """The server refused to let this connection publish `subject`."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"the NATS server refused to let these credentials publish to {subject} "
                         "(permissions violation)")
        self.subject = subject


def denied_subject(exc: Exception) -> str | None:
    """The subject of a publish permission violation nats-py reported, lower-cased; else None."""
    match = _VIOLATION.search(str(exc))
    return match.group(1) if match else None


class PermissionDenials:
    """Pass `error_cb` to `nats.connect` (errors still reach `then`), then `attach(nc)`."""

    def __init__(self, then: ErrorCallback | None = None) -> None:
        self.then = then
        self._waiters: set[tuple[str | None, asyncio.Future[str]]] = set()

    async def error_cb(self, exc: Exception) -> None:
        subject = denied_subject(exc)
        if subject is not None:
            for wanted, future in list(self._waiters):
                if not future.done() and (wanted is None or wanted.lower() == subject):
                    future.set_result(subject)
        if self.then is not None:
            await self.then(exc)

    def attach(self, nc: NatsClient) -> None:
        _attached[nc] = self

    async def guard(self, work: Awaitable[T], subject: str | None = None) -> T:
        """`work`'s result; `PublishDenied` as soon as the server refuses a publish of
        `subject` (any subject when None) while it runs."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiter = (subject, future)
        self._waiters.add(waiter)
        task = asyncio.ensure_future(work)
        both: set[asyncio.Future[Any]] = {task, future}
        try:
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            if future.done() and not task.done():
                task.cancel()
                raise PublishDenied(future.result())
            return await task
        finally:
            self._waiters.discard(waiter)
            if not task.done():
                task.cancel()


def denials_of(nc: NatsClient) -> PermissionDenials | None:
    return _attached.get(nc)
