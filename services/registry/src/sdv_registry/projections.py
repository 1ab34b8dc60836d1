"""Read models of the registry: device inventory read model and online/offline tracking from heartbeat gaps.

Fed from the bus by the shared projection runner; rows and checkpoint commit together."""
