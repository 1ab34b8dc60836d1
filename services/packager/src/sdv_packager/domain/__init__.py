"""Pure domain of the packager: the package aggregate: validation rules (name, semver, resources,
declared VSS signals), manifest, channels and yanking — commands, events, state, decide() and
evolve().

No I/O here: time, ids and lookups come in as arguments (see STYLE.md).
"""
