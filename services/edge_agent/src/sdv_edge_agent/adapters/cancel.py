"""Some libraries turn a task's cancellation into an ordinary exception (nats-py's `publish_async`
re-raises CancelledError as TooManyStalledMsgsError): a retry loop that catches `Exception` would
then swallow the cancellation and never stop. Every such loop calls this in its handler."""

from __future__ import annotations

import asyncio


def reraise_if_cancelling(exc: BaseException) -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc
