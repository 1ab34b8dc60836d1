"""Integration events and commands shared between services (the only coupling between them).

Importing this package registers every event type, so any consumer can decode any event.
"""

from sdv_events.schemas import (
    agent,
    deployment,
    devices,
    monitor,
    operators,
    packages,
    rollouts,
    scheduling,
)

__all__ = ["agent", "deployment", "devices", "monitor", "operators", "packages", "rollouts",
           "scheduling"]
