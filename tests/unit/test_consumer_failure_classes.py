"""How the consumer runner judges a handler's failure (sdv_events.processing.failures): an
outage is waited out, bad data parked at once, anything else retried a bounded number of times."""

from __future__ import annotations

import errno

import asyncpg
import nats.errors
import nats.js.errors
import pytest

from sdv_events.bus.rpc import (
    Conflict,
    Internal,
    InvalidRequest,
    NotFound,
    Rejected,
    RequestTimeout,
    ServiceUnavailable,
    UpgradeRequired,
)
from sdv_events.errors import DecodeError, DomainError, UnknownEventType
from sdv_events.ids import InvalidStreamId, stream_id
from sdv_events.processing.failures import classify, waiting_on, where


@pytest.mark.parametrize("error", [
    ServiceUnavailable("no packager service answers sdv.cmd.packager.get"),
    RequestTimeout("sdv.cmd.registry.get: no reply within 5.0s"),
    UpgradeRequired("too old"),
    UnknownEventType("rollout.Planned.v9"),
    ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
    OSError(errno.EHOSTUNREACH, "no route to host"),
    TimeoutError(),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock"),
    nats.errors.ConnectionClosedError(),
    nats.errors.NoRespondersError(),
    nats.js.errors.ServiceUnavailableError(),
])
def test_an_outage_is_transient_waited_out_and_never_parked(error: BaseException) -> None:
    assert classify(error) == "transient"


@pytest.mark.parametrize("error", [
    DecodeError("invalid_value", "bad"),
    DomainError("refused"),
    InvalidRequest("bad request"),
    NotFound("no such package"),
    Conflict("overlaps an active rollout"),
    Rejected("yanked"),
    InvalidStreamId("invalid stream id 'rollout-NOT.VALID'"),
    ValueError("bad value"),
    TypeError("bad type"),
    asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax"),
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
])
def test_bad_data_and_refusals_are_permanent_parked_at_once(error: BaseException) -> None:
    assert classify(error) == "permanent"


@pytest.mark.parametrize("error", [
    RuntimeError("a bug"), KeyError("x"), Internal("peer failed"),
    FileNotFoundError(errno.ENOENT, "no such file"),
])
def test_anything_else_is_unknown_retried_a_bounded_number_of_times(error: BaseException) -> None:
    assert classify(error) == "unknown"


def test_waiting_names_the_subject_of_a_request_nobody_answers() -> None:
    error = ServiceUnavailable("no packager service answers sdv.cmd.packager.get",
                               details={"subject": "sdv.cmd.packager.get"})
    assert waiting_on(error) == ("waiting on sdv.cmd.packager.get: ServiceUnavailable: "
                                 "no packager service answers sdv.cmd.packager.get")
    assert waiting_on(asyncpg.exceptions.ConnectionDoesNotExistError("closed")).startswith(
        "waiting on PostgreSQL: ConnectionDoesNotExistError")
    assert waiting_on(nats.errors.ConnectionClosedError()).startswith("waiting on NATS:")


def test_where_names_the_line_that_raised_instead_of_a_traceback() -> None:
    with pytest.raises(InvalidStreamId) as caught:
        stream_id("rollout", "NOT.VALID")
    assert where(caught.value).startswith("ids.py:")
    assert where(caught.value).endswith(" in split_stream_id")
