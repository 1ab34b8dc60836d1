"""Configuration of the registry: the shared settings (env vars, embedded-run defaults)."""

from sdv_events.service import ServiceSettings

SERVICE = "registry"


class RegistrySettings(ServiceSettings):
    """Fields of this service alone join the shared ones here."""


def load_settings() -> RegistrySettings:
    return RegistrySettings.from_env(SERVICE)
