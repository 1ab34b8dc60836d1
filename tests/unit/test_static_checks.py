"""The repository stays lint-clean (`ruff check .`) and the shared contract type-checked (mypy
--strict), both configured in pyproject.toml, so a slip fails the suite, not a later reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=110)


def test_ruff_finds_nothing_in_the_repository() -> None:
    """The README's `uv run ruff check .` (configured in pyproject.toml)."""
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes_on_sdv_events() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr
