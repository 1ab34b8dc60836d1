"""Bundle dependency wheels so a vehicle installs offline: `pip download` resolved for the
device's Python and platform, from an index or from a local folder of wheels (`--no-index`)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sdv_packager.build.errors import AppInvalid, Problem


@dataclass(frozen=True)
class WheelSource:
    """Where wheels come from. `find_links` + `no_index` = fully offline (a wheelhouse)."""

    find_links: Path | None = None
    no_index: bool = False
    platform: str = "manylinux2014_x86_64"
    timeout_s: float = 300.0


def download_wheels(
    dependencies: list[str], python_version: str, source: WheelSource
) -> dict[str, bytes]:
    """`wheels/<file>.whl` → bytes for the dependencies and their dependencies."""
    if not dependencies:
        return {}
    with tempfile.TemporaryDirectory(prefix="sdv-wheels-") as tmp:
        args = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--dest", tmp,
            "--python-version", python_version, "--implementation", "cp",
            "--platform", source.platform, "--platform", "any",
        ]
        if source.find_links is not None:
            args += ["--find-links", str(source.find_links)]
        if source.no_index:
            args.append("--no-index")
        result = subprocess.run(
            [*args, *dependencies], capture_output=True, text=True, timeout=source.timeout_s
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise AppInvalid([Problem("sdv-app.toml: app.dependencies",
                                      "cannot resolve wheels for python "
                                      f"{python_version}/{source.platform}: " + " | ".join(detail))])
        return {f"wheels/{p.name}": p.read_bytes() for p in sorted(Path(tmp).glob("*.whl"))}
