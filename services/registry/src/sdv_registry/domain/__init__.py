"""Pure domain of the registry: the device aggregate (admission, capabilities, labels,
presence transitions), label syntax, label selectors and the heartbeat presence tracker.

No I/O here: time, ids and lookups come in as arguments (see STYLE.md).
"""
