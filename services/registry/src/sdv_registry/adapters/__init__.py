"""Thin adapters of the registry: the command router (`sdv.cmd.registry.*`), the announce
router (`sdv.announce.*`), the heartbeat subscription (`sdv.hb.*`), questions answered from the
event log, and revocation pushes to the NATS server."""
