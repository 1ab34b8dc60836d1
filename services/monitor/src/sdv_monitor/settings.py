"""Configuration of the monitor: the shared settings plus its HTTP API."""

import os

from sdv_events.service import ServiceSettings

SERVICE = "monitor"


class MonitorSettings(ServiceSettings):
    # The read-only HTTP API (dashboard, scripts, Prometheus). Loopback unless told otherwise.
    http_host: str = "127.0.0.1"
    http_port: int = 8480


def load_settings() -> MonitorSettings:
    """The shared variables, plus `SDV_MONITOR_HTTP_HOST` and `SDV_MONITOR_HTTP_PORT`."""
    names = {"http_host": "SDV_MONITOR_HTTP_HOST", "http_port": "SDV_MONITOR_HTTP_PORT"}
    return MonitorSettings.from_env(SERVICE, **{k: os.environ[v] for k, v in names.items()
                                                if os.environ.get(v)})
