"""Which dependency lines an app may declare: PEP 508 requirements that pip resolves to wheels
from the packager's index or wheelhouse — a name, extras, version specifiers and markers, with
optional `--hash=` pins. Never a direct reference (URL, path, VCS) or a pip option line: those
make pip fetch and *build* code the operator never chose, and building runs it.

Pure: parses text, raises `DependencyRefused` naming the line and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

_HASH = re.compile(r"\s+--hash[=\s]\s*(\S+)")
_HASH_VALUE = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")
_PATH_OR_URL = re.compile(r"^(\.|~|/|\\|[a-zA-Z]:[\\/]|[a-zA-Z][a-zA-Z0-9+.-]*://|file:)")


class DependencyRefused(ValueError):
    """One dependency line the packager will not resolve; the message names the line."""


@dataclass(frozen=True)
class Dependency:
    requirement: str  # PEP 508 text, without options: what pip and the agent are given
    hashes: tuple[str, ...] = ()

    def requirements_line(self) -> str:
        """The line of the requirements file pip reads (hashes turn on pip's hash checking)."""
        return " ".join([self.requirement, *(f"--hash={h}" for h in self.hashes)])


def parse_dependency(line: str) -> Dependency:
    text = line.strip()
    hashes = tuple(_HASH.findall(text))
    rest = _HASH.sub("", text).strip()
    if not rest:
        raise DependencyRefused(f"{line!r} is empty")
    if rest.startswith("-"):
        raise DependencyRefused(
            f"{line!r} is a pip option line (-e, -r, --index-url, --find-links, ...); only "
            "PEP 508 requirements are accepted: where wheels come from is the packager's setting"
        )
    if _PATH_OR_URL.match(rest):
        raise DependencyRefused(
            f"{line!r} is a path or URL; name a released version instead, e.g. 'mylib==1.2.0'"
        )
    for value in hashes:
        if not _HASH_VALUE.match(value):
            raise DependencyRefused(f"{line!r}: {value!r} is not a sha256/sha384/sha512 hash")
    try:
        requirement = Requirement(rest)
    except InvalidRequirement as exc:
        raise DependencyRefused(f"{line!r} is not PEP 508: {str(exc).splitlines()[0]}") from None
    if requirement.url is not None:
        raise DependencyRefused(
            f"{line!r} is a direct reference ({requirement.url}): URL, path and VCS dependencies "
            "are refused because pip would build them, running their code in the packager; "
            f"publish it as a wheel and name its version, e.g. '{requirement.name}==1.0.0'"
        )
    return Dependency(rest if not hashes else str(requirement), hashes)


def parse_dependencies(lines: list[str]) -> list[Dependency]:
    """Every line, or `DependencyRefused` listing every refused line (`[index] reason`)."""
    parsed: list[Dependency] = []
    refused: list[str] = []
    for index, line in enumerate(lines):
        try:
            parsed.append(parse_dependency(line))
        except DependencyRefused as exc:
            refused.append(f"dependency [{index}] {exc}")
    if refused:
        raise DependencyRefused("; ".join(refused))
    return parsed
