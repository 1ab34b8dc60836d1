"""Configuration of the monitor: the shared settings plus its HTTP API and alert rules."""

from pydantic import Field

from sdv_events.service import ServiceSettings

SERVICE = "monitor"


class MonitorSettings(ServiceSettings):
    service: str = SERVICE
    # The read-only HTTP API (dashboard, scripts, Prometheus). Loopback unless told otherwise.
    http_host: str = Field("127.0.0.1", validation_alias="SDV_MONITOR_HTTP_HOST")
    http_port: int = Field(8480, validation_alias="SDV_MONITOR_HTTP_PORT", ge=0, le=65535)
    # Alert rules (domain/alerts.py): how often they are evaluated and their thresholds.
    alert_every_s: float = Field(5.0, validation_alias="SDV_MONITOR_ALERT_EVERY_S", gt=0)
    alert_offline_after_s: float = Field(300.0, validation_alias="SDV_MONITOR_ALERT_OFFLINE_AFTER_S", gt=0)
    alert_crash_restarts: int = Field(3, validation_alias="SDV_MONITOR_ALERT_CRASH_RESTARTS", ge=1)
    alert_service_grace_s: float = Field(15.0, validation_alias="SDV_MONITOR_ALERT_SERVICE_GRACE_S", ge=0)


def load_settings() -> MonitorSettings:
    """From the environment; raises `SettingsError` naming the variable of a bad value."""
    return MonitorSettings.load()
