"""Configuration of the monitor: the shared settings plus its HTTP API."""

import os

from sdv_events.service import ServiceSettings

SERVICE = "monitor"


class MonitorSettings(ServiceSettings):
    # The read-only HTTP API (dashboard, scripts, Prometheus). Loopback unless told otherwise.
    http_host: str = "127.0.0.1"
    http_port: int = 8480
    # Alert rules (domain/alerts.py): how often they are evaluated and their thresholds.
    alert_every_s: float = 5.0
    alert_offline_after_s: float = 300.0
    alert_crash_restarts: int = 3
    alert_service_grace_s: float = 15.0


def load_settings() -> MonitorSettings:
    """The shared variables, plus `SDV_MONITOR_HTTP_HOST`, `SDV_MONITOR_HTTP_PORT` and the alert
    thresholds `SDV_MONITOR_ALERT_EVERY_S`, `…_OFFLINE_AFTER_S`, `…_CRASH_RESTARTS`,
    `…_SERVICE_GRACE_S`."""
    names = {"http_host": "SDV_MONITOR_HTTP_HOST", "http_port": "SDV_MONITOR_HTTP_PORT",
             "alert_every_s": "SDV_MONITOR_ALERT_EVERY_S",
             "alert_offline_after_s": "SDV_MONITOR_ALERT_OFFLINE_AFTER_S",
             "alert_crash_restarts": "SDV_MONITOR_ALERT_CRASH_RESTARTS",
             "alert_service_grace_s": "SDV_MONITOR_ALERT_SERVICE_GRACE_S"}
    return MonitorSettings.from_env(SERVICE, **{k: os.environ[v] for k, v in names.items()
                                                if os.environ.get(v)})
