"""Thin adapters of the orchestrator: FastStream routers (commands on `sdv.cmd.orchestrator.*`) and the
desired-state KV bucket `sdv_desired`.
"""

from faststream.nats import NatsRouter


def routers() -> list[NatsRouter]:
    """The service's routers; none yet (the shared runtime serves `ping`)."""
    return []
