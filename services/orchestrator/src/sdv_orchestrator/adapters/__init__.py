"""Thin adapters of the orchestrator: the command router (`sdv.cmd.orchestrator.*`), the agents'
facts consumer and ticker, and the peers (packager, registry) reached over the bus."""
