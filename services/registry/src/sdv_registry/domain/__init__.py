"""Pure domain of the registry: the device aggregate: admission (announce → pending →
accepted/rejected), capabilities, labels, groups, selectors, decommission — commands, events, state,
decide() and evolve().

No I/O here: time, ids and lookups come in as arguments (see STYLE.md).
"""
