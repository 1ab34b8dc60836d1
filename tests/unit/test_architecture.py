"""The architecture rules of DESIGN.md and STYLE.md, checked on the real code.

The import contracts live in the root pyproject.toml (`[tool.importlinter]`): services never import
each other, the shared libraries import no service, domain modules and the decider do no I/O.
`lint-imports` runs in a subprocess so it resolves packages from the paths we give it rather than
from this interpreter's already-imported modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["packager", "registry", "orchestrator", "monitor", "edge_agent"]
SHAPE = ["application.py", "projections.py", "adapters/__init__.py", "app.py", "settings.py",
         "__main__.py"]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, *, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(cwd / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_same_contracts_catch_violations(tmp_path: Path) -> None:
    """A throwaway tree with the real package names, one violation per contract, checked with
    the project's own pyproject.toml: a contract that cannot fail would prove nothing."""
    files = {f"sdv_{name}/{rel}": "" for name in SERVICES for rel in ["__init__.py", "domain/__init__.py"]}
    files |= {
        "sdv_events/__init__.py": "",
        "sdv_client/__init__.py": "",
        # A service reaching into another service.
        "sdv_registry/app.py": "from sdv_orchestrator import domain\n",
        # Domain code doing I/O, directly and through a helper of its own package.
        "sdv_packager/domain/__init__.py": "import asyncpg\n",
        "sdv_edge_agent/domain/state.py": "from sdv_edge_agent.adapters import runner\n",
        "sdv_edge_agent/adapters/__init__.py": "",
        "sdv_edge_agent/adapters/runner.py": "import subprocess\n",
        "sdv_events/decider.py": "import time\n",
        "sdv_events/desired_signing.py": "import os\n",
        # The shared library depending on a service.
        "sdv_events/store.py": "import sdv_monitor\n",
    }
    _write(tmp_path, files)
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())

    result = lint_imports(tmp_path, pythonpath=tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "0 kept, 3 broken" in out, out
    for expected in [
        "sdv_registry.app -> sdv_orchestrator",
        "sdv_packager.domain -> asyncpg",
        "sdv_edge_agent.adapters.runner -> subprocess",
        "sdv_events.decider -> time",
        "sdv_events.desired_signing -> os",
        "sdv_events.store -> sdv_monitor",
    ]:
        assert expected in out, f"{expected!r} not reported:\n{out}"


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_the_shared_shape(name: str) -> None:
    service_dir = ROOT / "services" / name
    package = service_dir / "src" / f"sdv_{name}"
    # A module or a package of that name (`projections.py` or `projections/__init__.py`).
    missing = [rel for rel in SHAPE if not ((package / rel).is_file()
                                            or (package / rel.removesuffix(".py") / "__init__.py").is_file())]
    if not ((package / "domain" / "__init__.py").is_file() or (package / "domain.py").is_file()):
        missing.append("domain/ or domain.py")
    missing += [rel for rel in ["pyproject.toml", "Dockerfile"] if not (service_dir / rel).is_file()]
    assert not missing, f"services/{name} lacks {missing}"
    dockerfile = (service_dir / "Dockerfile").read_text()
    assert f"python\", \"-m\", \"sdv_{name}\"" in dockerfile or f"-m sdv_{name}" in dockerfile
    assert "\nUSER " in dockerfile, "containers run as a non-root user"
