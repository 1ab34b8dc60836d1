"""Bus helpers: broker factory, commands (request/reply), trace context, dead letters."""

from sdv_events.bus.broker import make_broker
from sdv_events.bus.deadletter import dead_letter
from sdv_events.bus.rpc import (
    CommandClient,
    CommandError,
    Conflict,
    Forbidden,
    Internal,
    InvalidRequest,
    NotFound,
    Rejected,
    RequestInfo,
    RequestTimeout,
    ServiceUnavailable,
    register_command,
)
from sdv_events.bus.tracing import configure_tracing, current_trace, extract, inject

__all__ = [
    "CommandClient", "CommandError", "Conflict", "Forbidden", "Internal", "InvalidRequest",
    "NotFound", "Rejected", "RequestInfo", "RequestTimeout", "ServiceUnavailable",
    "configure_tracing", "current_trace", "dead_letter", "extract", "inject", "make_broker",
    "register_command",
]
