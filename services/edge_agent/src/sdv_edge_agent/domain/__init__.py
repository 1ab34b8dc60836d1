"""Pure domain of the edge agent: the app lifecycle state machine, the reconcile decision (desired
vs. local state), the restart/crash-loop policy and the device-fact identities.

No I/O here: time, ids and lookups come in as arguments (see STYLE.md).
"""
