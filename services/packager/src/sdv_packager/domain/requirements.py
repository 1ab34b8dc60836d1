"""Dependency files an app brings: a pip requirements file (as pip-compile writes it: pins,
comments, `\\` continuations, `--hash`), a constraints file, or a `uv.lock`.

Every requirement still passes `dependencies.parse_dependency` (no URL, path, VCS or option
lines); the only options read are `-r`/`-c` references to other files of the app, which the
caller loads. Pure: text in, lines out.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from sdv_packager.domain.dependencies import DependencyRefused

_REFERENCES = {"-r": "requirements", "--requirement": "requirements",
               "-c": "constraints", "--constraint": "constraints"}


@dataclass(frozen=True)
class RequirementsFile:
    lines: list[str] = field(default_factory=list)  # requirement lines, options and comments gone
    requirements: list[str] = field(default_factory=list)  # files it includes (-r)
    constraints: list[str] = field(default_factory=list)  # constraints files it names (-c)


def _logical_lines(text: str) -> list[str]:
    """Physical lines joined at a trailing backslash, comments dropped (pip's own rules: a
    comment starts at `#` at the line start or after whitespace)."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        hash_at = next((i for i, c in enumerate(line) if c == "#" and (i == 0 or line[i - 1].isspace())), -1)
        line = (line[:hash_at] if hash_at >= 0 else line).strip()
        if line:
            joined.append(line)
    if pending.strip():
        joined.append(pending.strip())
    return joined


def parse_requirements_file(text: str, name: str) -> RequirementsFile:
    lines: list[str] = []
    requirements: list[str] = []
    constraints: list[str] = []
    for line in _logical_lines(text):
        option, _, rest = line.partition(" ")
        if "=" in option and option.startswith("--"):
            option, _, rest = line.partition("=")
        kind = _REFERENCES.get(option)
        if kind is not None:
            (requirements if kind == "requirements" else constraints).append(rest.strip())
        elif line.startswith("-"):
            raise DependencyRefused(
                f"{name}: {line!r} is a pip option: only requirements, -r and -c lines are read "
                "(where wheels come from is the packager's setting)")
        else:
            lines.append(line)
    return RequirementsFile(lines, requirements, constraints)


@dataclass(frozen=True)
class Lock:
    requirements: list[str]  # the project's own dependencies (names, as it declares them)
    pins: list[str]  # name==version of every locked distribution from a package index


def parse_uv_lock(text: str, name: str = "uv.lock") -> Lock:
    """The root project's dependencies as requirements and every locked registry package as a
    pin: pip then resolves exactly the lock's versions (for each platform the package carries,
    as uv's universal lock does)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DependencyRefused(f"{name}: not TOML: {exc}") from None
    packages = data.get("package", [])
    if not isinstance(packages, list):
        raise DependencyRefused(f"{name}: no [[package]] tables")
    pins: list[str] = []
    roots: list[str] = []
    for package in packages:
        source = package.get("source", {})
        if "registry" in source:
            pins.append(f"{package['name']}=={package['version']}")
        elif source.get("virtual") or source.get("editable"):
            for dependency in package.get("dependencies", []):
                extras = dependency.get("extra", [])
                roots.append(dependency["name"] + (f"[{','.join(extras)}]" if extras else ""))
        else:
            raise DependencyRefused(
                f"{name}: {package.get('name')!r} comes from {sorted(source)}: only packages from "
                "an index are bundled (publish it as a wheel and lock that)")
    if not roots:
        raise DependencyRefused(f"{name}: no project with dependencies in the lock")
    return Lock(sorted(set(roots)), sorted(set(pins)))
