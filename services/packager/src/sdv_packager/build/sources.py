"""Collect an app's files and check its Python: every .py parses, the entry point exists."""

from __future__ import annotations

import ast
from pathlib import Path

from sdv_packager.build.errors import AppInvalid, Problem

# Never packaged: build output, caches, VCS metadata, local environments, secrets by habit.
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".venv", "venv", ".mypy_cache", ".pytest_cache",
              ".ruff_cache", "build", "dist", ".sdv"}
_SKIP_SUFFIXES = {".pyc", ".pyo", ".swp"}
_SKIP_NAMES = {".DS_Store", ".env"}
MAX_APP_BYTES = 64 * 1024 * 1024


def collect_sources(app_dir: Path) -> dict[str, bytes]:
    """Relative POSIX path → content, for every file that belongs in the package."""
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(app_dir.rglob("*")):
        rel = path.relative_to(app_dir)
        if any(part in _SKIP_DIRS for part in rel.parts[:-1]) or rel.parts[0] in _SKIP_DIRS:
            continue
        if not path.is_file() or path.is_symlink():
            continue
        if path.suffix in _SKIP_SUFFIXES or path.name in _SKIP_NAMES:
            continue
        data = path.read_bytes()
        total += len(data)
        if total > MAX_APP_BYTES:
            raise AppInvalid([Problem(rel.as_posix(), "app sources exceed "
                                      f"{MAX_APP_BYTES // (1024 * 1024)} MB")])
        files[rel.as_posix()] = data
    return files


def check_python(files: dict[str, bytes], entry_point: str, where: str = "sdv-app.toml") -> list[Problem]:
    problems = []
    if entry_point not in files:
        problems.append(Problem(f"{where}: app.entry_point",
                                f"{entry_point} does not exist in the app directory"))
    for path, content in files.items():
        if not path.endswith(".py"):
            continue
        try:
            ast.parse(content, filename=path)
        except SyntaxError as exc:
            problems.append(Problem(f"{path}:{exc.lineno or 0}", f"syntax error: {exc.msg}"))
        except ValueError as exc:  # e.g. null bytes
            problems.append(Problem(path, f"not parseable: {exc}"))
    return problems
