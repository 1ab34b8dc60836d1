"""Pure domain of the edge agent: the app lifecycle state machine (INSTALLING → INSTALLED → STARTING →
RUNNING ⇄ PAUSED → STOPPED → UNINSTALLING, FAILED) and the reconcile decision (desired vs. local
state).

No I/O here: time, ids and lookups come in as arguments (see STYLE.md).
"""
