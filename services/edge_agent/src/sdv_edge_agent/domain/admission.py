"""What the agent admits from a desired document, before anything of it touches the device.

The agent acts only on documents the orchestrator signed (`sdv_events.desired_signing`); as a
second line, should the orchestrator itself be compromised, everything in a document that the
agent uses as a path, a subject token, a process environment or a version order is checked here,
purely:

- the app key must be a valid app name (the packager's rule: lowercase letters, digits and single
  hyphens, starting with a letter, 2-64 characters) and equal the package's name, which the
  installer in turn checks against the signed manifest — a key is then safe as a path component
  and a subject token;
- `config` (the app's environment) may not set what decides which code a process loads
  (`PYTHON*`, `LD_*`, glibc's other loader/locale variables, `PATH`, …) nor what the agent sets
  itself (`HOME`, `TMPDIR`, `SDV_*`, …);
- a version older than the active one is a downgrade, taken only with the orchestrator's
  `rollback` flag;
- activation gates must parse (`sdv_events.gates`): a gate the agent cannot judge would hold the
  switch back for ever.
"""

from __future__ import annotations

import re

from sdv_events.gates import InvalidGate, parse_gates
from sdv_events.schemas.deployment import DesiredApp

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$")  # = sdv_packager.domain.manifest.NAME_RE
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_CONFIG_ENTRIES = 256
MAX_CONFIG_VALUE = 32 * 1024

# Variables that change what code runs or how it is loaded. PATH is refused too rather than
# silently overridden: the agent sets it (the app's venv first), so a config PATH never worked,
# and a refusal tells the operator so.
_LOADER_PREFIXES = ("PYTHON", "LD_", "GLIBC_", "MALLOC_", "PIP_", "UV_", "VIRTUAL_ENV")
_LOADER_NAMES = frozenset({
    "PATH", "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "NIS_PATH",
    "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR", "PYTHONPATH", "PERL5LIB", "PERL5OPT",
    "NODE_OPTIONS", "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "OPENSSL_CONF", "OPENSSL_MODULES",
})
# Set by the agent for every app; a config value would be overridden, so it is refused.
_AGENT_OWNED_PREFIXES = ("SDV_", "KUKSA_")
_AGENT_OWNED_NAMES = frozenset({"HOME", "TMPDIR", "LANG"})


def valid_app_name(name: str) -> bool:
    return bool(NAME_RE.match(name)) and "--" not in name


def config_problems(config: dict[str, str]) -> list[str]:
    """Why this `config` cannot become an app's environment (empty: it can)."""
    if len(config) > MAX_CONFIG_ENTRIES:
        return [f"{len(config)} config entries (at most {MAX_CONFIG_ENTRIES})"]
    problems = []
    for key, value in config.items():
        upper = key.upper()
        if not ENV_NAME_RE.match(key):
            problems.append(f"{key[:64]!r} is not an environment variable name")
        elif upper in _LOADER_NAMES or upper.startswith(_LOADER_PREFIXES):
            problems.append(f"{key} decides what code the app loads: config may not set it")
        elif upper in _AGENT_OWNED_NAMES or upper.startswith(_AGENT_OWNED_PREFIXES):
            problems.append(f"{key} is set by the agent: config may not set it")
        elif "\0" in value or len(value) > MAX_CONFIG_VALUE:
            problems.append(f"{key}: the value has a NUL byte or is longer than {MAX_CONFIG_VALUE}")
    return problems


def admission_problem(key: str, app: DesiredApp) -> str | None:
    """Why a desired entry is refused before the agent touches anything for it (None: admitted)."""
    if not valid_app_name(key):
        return (f"app key {key[:80]!r} is not a valid app name (lowercase letters, digits and single "
                "hyphens, starting with a letter, 2-64 characters)")
    if app.package.name != key:
        return f"app key {key!r} is not the package's name {app.package.name[:80]!r}"
    problems = config_problems(app.config)
    if problems:
        return "config refused: " + "; ".join(problems)
    if app.activation is not None:
        try:
            parse_gates(app.activation.gates)
        except InvalidGate as err:
            return str(err)
    return None


# --- versions (semantic versioning 2.0 precedence, as the packager validates them) --------------

_SEMVER_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
_Key = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def version_key(version: str) -> _Key | None:
    """A sort key giving semver precedence (build metadata ignored); None if not a semver."""
    match = _SEMVER_RE.match(version)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    if pre is None:
        return int(major), int(minor), int(patch), 1, ()
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return int(major), int(minor), int(patch), 0, parts


def is_downgrade(active: str, wanted: str) -> bool:
    """`wanted` has lower precedence than `active` (an unparsable version counts as a downgrade:
    the packager only signs semantic versions)."""
    old, new = version_key(active), version_key(wanted)
    if old is None or new is None:
        return active != wanted
    return new < old
