"""Thin adapters of the monitor: the fact recorder, the reported-state watch, NATS queries
(`sdv.cmd.monitor.*`) and the HTTP API."""
