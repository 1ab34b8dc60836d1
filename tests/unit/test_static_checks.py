"""The repository stays lint-clean (`ruff check .`) and every package type-checked (mypy
--strict), both configured in pyproject.toml, so a slip fails the suite, not a later reader."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=110)


def test_ruff_finds_nothing_in_the_repository() -> None:
    """The README's `uv run ruff check .` (configured in pyproject.toml)."""
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_configured_for_every_package_and_the_tools() -> None:
    """`uv run mypy` (no arguments) checks what pyproject.toml lists: every package of the
    workspace (libs/*, services/*) and tools/, so a new package cannot slip out of it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    packages = {str(p.relative_to(ROOT)) for p in ROOT.glob("*/*/src/sdv_*") if p.is_dir()}
    assert packages >= {"libs/events/src/sdv_events", "services/edge_agent/src/sdv_edge_agent"}
    assert set(config["files"]) == packages | {"tools"}


def test_mypy_strict_passes_on_every_package() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
