"""Thin adapters of the edge agent: SQLite store, NATS link, desired-state watch, fact/log/report
publishers, interactive ops, heartbeats, object-store download and install, the native runtime and
its limits and console capture, the KUKSA databroker lookup."""
