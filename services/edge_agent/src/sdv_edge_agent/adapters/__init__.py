"""Thin adapters of the edge agent: FastStream routers (commands on `sdv.cmd.edge_agent.*`) and
desired-state watch, object store download and signature check, native and Docker app runners, the
KUKSA databroker lookup.
"""

from faststream.nats import NatsRouter


def routers() -> list[NatsRouter]:
    """The service's routers; none yet (the shared runtime serves `ping`)."""
    return []
