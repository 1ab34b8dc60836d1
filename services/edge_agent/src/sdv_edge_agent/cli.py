"""The `sdv-agent` command (`python -m sdv_edge_agent`): settings from the command line and the
environment, then one agent (`app.serve`) or, with `--simulate N`, N simulated agents in this
process (`simulation.simulate`, which builds on app.py — hence this module above both)."""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys

from sdv_edge_agent.app import serve
from sdv_edge_agent.settings import SERVICE, SettingsError, load_settings
from sdv_edge_agent.simulation import simulate
from sdv_events.bus.tracing import configure_tracing
from sdv_events.logs import configure_logging


def main(argv: list[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
    except SettingsError as err:
        print(f"sdv-agent: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(SERVICE, level=settings.log_level)
    configure_tracing(SERVICE)  # spans to OTEL_EXPORTER_OTLP_ENDPOINT, when set
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` dumps every stack
    if settings.simulation is not None:
        raise SystemExit(asyncio.run(simulate(settings)))
    asyncio.run(serve(settings))
