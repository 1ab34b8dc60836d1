"""Configuration of the monitor: the shared settings (env vars, embedded-run defaults)."""

from sdv_events.service import ServiceSettings

SERVICE = "monitor"


class MonitorSettings(ServiceSettings):
    """Fields of this service alone join the shared ones here."""


def load_settings() -> MonitorSettings:
    return MonitorSettings.from_env(SERVICE)
