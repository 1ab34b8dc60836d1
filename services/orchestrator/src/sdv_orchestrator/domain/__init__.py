"""Pure domain of the orchestrator: the rollout aggregate: targets, strategies, waves, success/error
thresholds, pause/resume/cancel/rollback — commands, events, state, decide() and evolve().

No I/O here: time, ids and lookups come in as arguments (see STYLE.md).
"""
