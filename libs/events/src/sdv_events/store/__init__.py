"""The PostgreSQL event store."""

from sdv_events.store.postgres import ANY, NO_STREAM, AppendResult, EventStore
from sdv_events.store.schema import ensure_schema

__all__ = ["ANY", "NO_STREAM", "AppendResult", "EventStore", "ensure_schema"]
