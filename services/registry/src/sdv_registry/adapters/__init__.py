"""Thin adapters of the registry: FastStream routers (commands on `sdv.cmd.registry.*`) and heartbeat
subscription on `sdv.hb.*`, NATS credential minting.
"""

from faststream.nats import NatsRouter


def routers() -> list[NatsRouter]:
    """The service's routers; none yet (the shared runtime serves `ping`)."""
    return []
