"""What every service is configured with; a service's own settings subclass `ServiceSettings`
and add their fields, each with its variable (see `sdv_events.settings`)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, field_validator, model_validator

from sdv_events.auth.client_tls import CA_ENV
from sdv_events.idempotency import DEFAULT_KEY_TTL
from sdv_events.processing.runner import DEFAULT_MAX_LAG_S
from sdv_events.provisioning import EventsRetention
from sdv_events.settings import Settings, current_environment, log_level
from sdv_events.store.postgres import MAX_EVENT_BYTES

_RETENTION = EventsRetention()


class ServiceSettings(Settings):
    """The shared settings. `SDV_<SERVICE>_SCHEMA` names the service's schema (default: its name)."""

    service: str
    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias="SDV_NATS_URL")
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/postgres",
                              validation_alias="SDV_DATABASE_URL")
    # The PostgreSQL schema of the service's event store (`schema` would shadow BaseModel.schema);
    # its variable depends on the service, so it is read in `_default_schema`.
    schema_name: str = ""
    # False where the schema's owner sets the event store up and this service's role may not
    # (`sdv up`'s role per service, sdv_events/store/roles.py): then only checked at start.
    schema_setup: bool = Field(True, validation_alias="SDV_SCHEMA_SETUP")
    log_level: str = Field("INFO", validation_alias="SDV_LOG_LEVEL")
    # A `.creds` file (user JWT + nkey seed) for a NATS server in operator mode; None = no auth.
    nats_credentials: str | None = Field(None, validation_alias="SDV_NATS_CREDS")
    # The CA certificate the NATS server's certificate must be signed by (pinned: no other CA is
    # trusted); None = the system's authorities, for a server that requires TLS at all.
    nats_ca: str | None = Field(None, validation_alias=CA_ENV)
    # The largest event `append` stores (encoded body + metadata), below NATS's max payload.
    max_event_bytes: int = Field(MAX_EVENT_BYTES, validation_alias="SDV_MAX_EVENT_BYTES", gt=0)
    # Health turns red when the oldest unpublished event is older than this.
    relay_stuck_after_s: float = Field(30.0, validation_alias="SDV_RELAY_STUCK_AFTER_S", gt=0)
    # … and when a consumer's oldest unhandled message is older than this.
    consumer_max_lag_s: float = Field(DEFAULT_MAX_LAG_S, validation_alias="SDV_CONSUMER_MAX_LAG_S", gt=0)
    # How long a command's idempotency key returns its first outcome (then it is a new key).
    idempotency_ttl_s: float = Field(DEFAULT_KEY_TTL.total_seconds(),
                                     validation_alias="SDV_IDEMPOTENCY_TTL_S", gt=0)
    # How long and how much of SDV_EVENTS JetStream keeps (every service provisions it: the whole
    # suite must agree, so set these in the environment it shares).
    events_max_age_s: float = Field(_RETENTION.max_age_s, validation_alias="SDV_EVENTS_MAX_AGE_S", gt=0)
    events_max_bytes: int = Field(_RETENTION.max_bytes, validation_alias="SDV_EVENTS_MAX_BYTES", gt=0)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return log_level(value)

    @model_validator(mode="after")
    def _default_schema(self) -> Self:
        if not self.schema_name:
            variable = f"SDV_{self.service.upper()}_SCHEMA"
            self.schema_name = current_environment().get(variable) or self.service
        return self

    @property
    def retention(self) -> EventsRetention:
        return EventsRetention(self.events_max_age_s, self.events_max_bytes)

    @classmethod
    def from_env(cls, service: str, **overrides: Any) -> Self:
        """The environment's settings for `service` (what `load` does; kept for callers)."""
        return cls.load(service=service, **overrides)
