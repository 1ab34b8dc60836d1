"""Read models of the monitor: fleet, rollout and app-health read models in PostgreSQL, with checkpoints.

Fed from the bus by the shared projection runner; rows and checkpoint commit together."""
