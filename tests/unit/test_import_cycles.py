"""No import cycles anywhere (tools/import_cycles.py over every root package, TYPE_CHECKING
imports included), and the check bites: a throwaway tree with the real package names and one
cycle per kind fails it, naming each cycle. Run in a subprocess so it resolves the packages from
the paths we give it, as tests/unit/test_architecture.py does for the import contracts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "import_cycles.py"
PACKAGES = ["sdv_events", "sdv_client", "sdv_packager", "sdv_registry", "sdv_orchestrator", "sdv_monitor",
            "sdv_edge_agent"]


def check(cwd: Path, *, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, str(CHECK), "--config", str(cwd / "pyproject.toml")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_no_package_has_an_import_cycle() -> None:
    result = check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no import cycles" in result.stdout


def test_the_check_catches_cycles(tmp_path: Path) -> None:
    files = {f"{name}/__init__.py": "" for name in PACKAGES}
    files |= {
        # Two modules importing each other, the edge agent's old app <-> simulation.
        "sdv_edge_agent/app.py": "from sdv_edge_agent import simulation\n",
        "sdv_edge_agent/simulation.py": "from sdv_edge_agent.app import build_agent\n",
        # Through a third module, one of the imports under TYPE_CHECKING.
        "sdv_events/store.py": "from sdv_events import idempotency\n",
        "sdv_events/idempotency.py": "from sdv_events import keys\n",
        "sdv_events/keys.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sdv_events.store import EventStore\n"),
        # Across subpackages, deep down.
        "sdv_registry/adapters/__init__.py": "",
        "sdv_registry/adapters/views.py": "from sdv_registry.domain.rules import limit\n",
        "sdv_registry/domain/__init__.py": "",
        "sdv_registry/domain/rules.py": "import sdv_registry.adapters.views\n",
        # No cycle: a chain in one direction.
        "sdv_packager/app.py": "from sdv_packager import application\n",
        "sdv_packager/application.py": "from sdv_packager import domain\n",
        "sdv_packager/domain.py": "",
    }
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())

    result = check(tmp_path, pythonpath=tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "3 problem(s)" in out, out
    for expected in [
        "import cycle: sdv_edge_agent.app -> sdv_edge_agent.simulation -> sdv_edge_agent.app",
        "import cycle: sdv_events.idempotency -> sdv_events.keys -> sdv_events.store -> sdv_events.idempotency",
        "import cycle: sdv_registry.adapters.views -> sdv_registry.domain.rules -> sdv_registry.adapters.views",
    ]:
        assert expected in out, f"{expected!r} not reported:\n{out}"
    assert "sdv_packager" not in out
