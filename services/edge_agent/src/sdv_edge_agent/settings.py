"""Configuration of the edge agent: the shared settings (env vars, embedded-run defaults)."""

from sdv_events.service import ServiceSettings

SERVICE = "edge_agent"


class EdgeAgentSettings(ServiceSettings):
    """Fields of this service alone join the shared ones here."""


def load_settings() -> EdgeAgentSettings:
    return EdgeAgentSettings.from_env(SERVICE)
