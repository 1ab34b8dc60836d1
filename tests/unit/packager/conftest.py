from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from sdv_packager.domain.vss import VssCatalog

MANIFEST = """\
[app]
name = "door-watch"
version = "0.1.0"
description = "test app"
entry_point = "main.py"

[vss]
reads = ["Vehicle.Speed"]
writes = ["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"]

[resources]
memory = "256MB"
cpu = "0.5"
"""


@pytest.fixture(scope="session")
def catalog() -> VssCatalog:
    data = (resources.files("sdv_packager") / "data" / "vss_catalog.json").read_bytes()
    return VssCatalog.from_json(data)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A small valid app without third-party dependencies."""
    app = tmp_path / "door-watch"
    (app / "lib").mkdir(parents=True)
    (app / "sdv-app.toml").write_text(MANIFEST)
    (app / "main.py").write_text("from lib.rules import locked\nprint(locked(True))\n")
    (app / "lib" / "__init__.py").write_text("")
    (app / "lib" / "rules.py").write_text("def locked(x: bool) -> str:\n    return 'locked' if x else 'open'\n")
    return app
