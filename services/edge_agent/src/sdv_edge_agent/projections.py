"""Read models of the edge agent: the agent's local view of its apps, resumed from SQLite after a reboot.

Fed from the bus by the shared projection runner; rows and checkpoint commit together."""
