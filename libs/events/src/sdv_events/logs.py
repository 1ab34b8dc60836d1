"""structlog, configured once per process, with context bound by contextvars
(`rollout_id`, `device_id`, `app`, `trace_id` …) so every line of a request carries them."""

from __future__ import annotations

import logging
import os
import sys

import structlog

_configured = False


def configure_logging(service: str, *, level: str | None = None, json: bool | None = None) -> None:
    global _configured
    if _configured:
        structlog.contextvars.bind_contextvars(service=service)
        return
    level_name = (level or os.environ.get("SDV_LOG_LEVEL", "INFO")).upper()
    use_json = json if json is not None else os.environ.get("SDV_LOG_JSON", "") == "1"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    _configured = True
