"""What a consumer does with a handler's failure, decided in this one place.

- **transient** — something the handler depends on is away: a service that does not answer
  (`ServiceUnavailable`, `RequestTimeout`) or is too old for a stream (`UpgradeRequired`), a
  lost connection to PostgreSQL or NATS, a timeout. Retried with capped backoff for as long as
  it lasts, never counted toward parking; health says "waiting on <what>: <error>" meanwhile.
  Parking such an event would lose it for a reason that has nothing to do with the event.
- **permanent** — the event itself cannot be handled, however often it is tried: it does not
  decode (`DecodeError`), a decider or a peer refuses it (`DomainError`, `InvalidRequest`,
  `NotFound`, `Conflict`, `Rejected`, `Forbidden`, `IdempotencyConflict`, `EventTooLarge`), or
  its data is bad (`ValueError`, `TypeError` — an invalid stream id, a value PostgreSQL refuses).
  Parked at once (dead letter with the reason), without retries.
- **unknown** — anything else (a bug, an internal error of a peer): retried a bounded number of
  times with backoff, then parked.

A processor that must treat a refusal as an outcome (a policy whose rollout is refused) catches
it itself; what reaches the runner is classified here.
"""

from __future__ import annotations

import errno
import socket
import traceback
from typing import Literal

import asyncpg
import nats.errors
import nats.js.errors

from sdv_events.bus.rpc import (
    CommandError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    Rejected,
    RequestTimeout,
    ServiceUnavailable,
    UpgradeRequired,
)
from sdv_events.errors import (
    DecodeError,
    DomainError,
    EventTooLarge,
    IdempotencyConflict,
    UnknownEventType,
    UpgradeNeeded,
)

FailureKind = Literal["transient", "permanent", "unknown"]

_TRANSIENT: tuple[type[BaseException], ...] = (
    ServiceUnavailable,
    RequestTimeout,
    UpgradeRequired,
    UpgradeNeeded,
    UnknownEventType,  # read from a store by the handler: this build is too old, not the event
    ConnectionError,
    TimeoutError,  # asyncio's and nats-py's too
    socket.gaierror,  # a name that does not resolve (yet)
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)

_PERMANENT: tuple[type[BaseException], ...] = (
    DecodeError,
    DomainError,
    InvalidRequest,
    NotFound,
    Conflict,
    Rejected,
    Forbidden,
    IdempotencyConflict,
    EventTooLarge,
    asyncpg.DataError,  # PostgreSQL refuses a value (class 22)
    asyncpg.IntegrityConstraintViolationError,  # … or a row (class 23)
    ValueError,  # also asyncpg's client-side DataError, InvalidStreamId, msgspec validation
    TypeError,
)


# Network errors that reach us as a bare OSError (a connect to an unreachable host).
_NETWORK_ERRNOS = frozenset({
    errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET, errno.EHOSTDOWN, errno.EHOSTUNREACH,
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
})


def classify(exc: BaseException) -> FailureKind:
    # Transient first: some transient errors are also ValueErrors or DecodeErrors.
    if isinstance(exc, _TRANSIENT):
        return "transient"
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return "transient"
    if isinstance(exc, _PERMANENT):
        return "permanent"
    return "unknown"


def cause(exc: BaseException | None) -> str:
    """`Type: message`, bounded (a log field, a health reason, a dead letter header)."""
    text = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
    return text if len(text) <= 500 else text[:497] + "..."


def dependency(exc: BaseException) -> str:
    """What a transient failure waits on: the subject of a request, else the client library
    the failure came from (`PostgreSQL`, `NATS`), else `a connection`."""
    if isinstance(exc, CommandError) and exc.details.get("subject"):
        return exc.details["subject"]
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return "PostgreSQL"
    if isinstance(exc, nats.errors.Error):
        return "NATS"
    if isinstance(exc, UpgradeNeeded | UnknownEventType):
        return "an upgrade of this service"
    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith("asyncpg"):
            return "PostgreSQL"
        if module.startswith("nats"):
            return "NATS"
    return "a connection"


def waiting_on(exc: BaseException) -> str:
    return f"waiting on {dependency(exc)}: {cause(exc)}"


def where(exc: BaseException | None) -> str:
    """Where it was raised (`file.py:123 in func`): one log field instead of a traceback."""
    if exc is None or exc.__traceback__ is None:
        return ""
    frame, line = list(traceback.walk_tb(exc.__traceback__))[-1]
    return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{line} in {frame.f_code.co_name}"
