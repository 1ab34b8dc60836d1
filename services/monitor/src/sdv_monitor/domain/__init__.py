"""Pure domain of the monitor: alert rules (device offline, crash loop, rollout aborted) as pure
functions of events and time.

No I/O here: time, ids and lookups come in as arguments (see STYLE.md).
"""
