"""Typed errors of the shared contract. Each carries a message a user can act on."""

from __future__ import annotations

from typing import Literal

DecodeReason = Literal[
    "malformed", "unknown_type", "missing_field", "wrong_type", "invalid_value", "too_large",
    "too_deep",
]


class SdvError(Exception):
    """Base of every error sdv_events raises on purpose."""


class DecodeError(SdvError):
    """Untrusted bytes did not decode to a known, valid message."""

    def __init__(self, reason: DecodeReason, message: str, *, path: str = "$") -> None:
        super().__init__(f"{reason} at {path}: {message}")
        self.reason: DecodeReason = reason
        self.path = path
        self.detail = message


class UnknownEventType(DecodeError):
    def __init__(self, type_name: str) -> None:
        super().__init__("unknown_type", f"no event type registered as {type_name!r}", path="$.type")
        self.type_name = type_name


class ConcurrencyConflict(SdvError):
    """`append` saw another version than the caller expected: reload and decide again."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, append expected {expected}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class EventTooLarge(SdvError):
    """An event whose encoded body and metadata exceed the store's bound; nothing was stored.

    Events must not grow with the fleet: split what a command decides into bounded events."""

    def __init__(self, stream_id: str, type_name: str, size: int, limit: int) -> None:
        super().__init__(
            f"event {type_name} on stream {stream_id!r} is {size} bytes, over the {limit}-byte "
            "limit; nothing was appended"
        )
        self.stream_id = stream_id
        self.type_name = type_name
        self.size = size
        self.limit = limit


class DuplicateCommand(SdvError):
    """The command's idempotency key is already bound to this request; `outcome` is the first
    result (raw bytes) and nothing was appended."""

    def __init__(self, command_id: str, outcome: bytes) -> None:
        super().__init__(f"command {command_id!r} was already handled")
        self.command_id = command_id
        self.outcome = outcome


class IdempotencyConflict(SdvError):
    """A command id already bound (and not expired) to another request of the same command.

    Nothing was run: the client reused a key; a retry must send the same request, a new
    request needs a new command id."""

    def __init__(self, command: str, command_id: str) -> None:
        super().__init__(
            f"command id {command_id!r} was already used for another {command} request; "
            "resend the same request to get its outcome, or use a new command id"
        )
        self.command = command
        self.command_id = command_id


class DomainError(SdvError):
    """A decider refused a command. `code` is stable for clients; message is for people."""

    code: str = "rejected"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class UpgradeNeeded(SdvError):
    """A stream holds an event this build cannot read (a newer writer in a rolling deploy): the
    request was fine, this service is too old to fold the stream. Retry once it is upgraded."""

    def __init__(self, stream_id: str, type_name: str) -> None:
        super().__init__(
            f"stream {stream_id!r} holds a {type_name} event this build of the service does not "
            "know: upgrade the service (the request itself was valid)"
        )
        self.stream_id = stream_id
        self.type_name = type_name


class RetriesExhausted(SdvError):
    def __init__(self, stream_id: str, attempts: int) -> None:
        super().__init__(f"stream {stream_id!r}: still conflicting after {attempts} attempts")
        self.stream_id = stream_id
        self.attempts = attempts
