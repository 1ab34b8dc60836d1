"""Read models of the orchestrator: rollout progress read model fed by device facts.

Fed from the bus by the shared projection runner; rows and checkpoint commit together."""
