"""Configuration of the orchestrator: the shared settings plus its clock."""

from sdv_events.service import ServiceSettings

SERVICE = "orchestrator"


class OrchestratorSettings(ServiceSettings):
    tick_s: float = 1.0  # how often device timeouts and soak times are checked


def load_settings() -> OrchestratorSettings:
    return OrchestratorSettings.from_env(SERVICE)
