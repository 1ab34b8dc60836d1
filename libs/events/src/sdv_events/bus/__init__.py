"""Bus helpers: broker factory, commands (request/reply), trace context, dead letters.

`make_broker` and `register_command` load FastStream; they are imported on first use, so a
process that only speaks nats-py (the edge agent) never pays for FastStream's import.
"""

from typing import TYPE_CHECKING, Any

from sdv_events.bus.deadletter import dead_letter
from sdv_events.bus.rpc import (
    CommandClient,
    CommandError,
    Conflict,
    Forbidden,
    Internal,
    InvalidRequest,
    NotFound,
    RateLimited,
    Rejected,
    RequestInfo,
    RequestTimeout,
    ServiceUnavailable,
    UpgradeRequired,
)
from sdv_events.bus.tracing import configure_tracing, current_trace, extract, inject

if TYPE_CHECKING:
    from sdv_events.bus.broker import make_broker
    from sdv_events.bus.routes import register_command

__all__ = [
    "CommandClient", "CommandError", "Conflict", "Forbidden", "Internal", "InvalidRequest",
    "NotFound", "RateLimited", "Rejected", "RequestInfo", "RequestTimeout", "ServiceUnavailable",
    "UpgradeRequired", "configure_tracing", "current_trace", "dead_letter", "extract", "inject",
    "make_broker", "register_command",
]


def __getattr__(name: str) -> Any:
    if name == "make_broker":
        from sdv_events.bus.broker import make_broker

        return make_broker
    if name == "register_command":
        from sdv_events.bus.routes import register_command

        return register_command
    raise AttributeError(f"module 'sdv_events.bus' has no attribute {name!r}")
