"""Thin adapters of the monitor: FastStream routers (commands on `sdv.cmd.monitor.*`) and the HTTP API,
server-sent events for the dashboard, Prometheus metrics.
"""

from faststream.nats import NatsRouter


def routers() -> list[NatsRouter]:
    """The service's routers; none yet (the shared runtime serves `ping`)."""
    return []
