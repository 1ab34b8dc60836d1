"""Configuration of the orchestrator: the shared settings (env vars, embedded-run defaults)."""

from sdv_events.service import ServiceSettings

SERVICE = "orchestrator"


class OrchestratorSettings(ServiceSettings):
    """Fields of this service alone join the shared ones here."""


def load_settings() -> OrchestratorSettings:
    return OrchestratorSettings.from_env(SERVICE)
