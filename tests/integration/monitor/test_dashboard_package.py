"""The monitor's wheel carries the dashboard: templates, its own scripts and styles, and the
vendored libraries with their licences (a dashboard that works from a source checkout only
would be blank in the service image)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]


def test_the_monitor_wheel_holds_the_dashboards_templates_assets_and_licences(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("no uv on PATH to build the wheel with")
    subprocess.run([uv, "build", "--package", "sdv-monitor", "--wheel", "-o", str(tmp_path)], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("sdv_monitor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "services" / "monitor" / "src"
    expected = {str(p.relative_to(package)) for p in (package / "sdv_monitor" / "dashboard").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert expected <= names, sorted(expected - names)
    assert {"sdv_monitor/dashboard/templates/rollout.html", "sdv_monitor/dashboard/static/vendor/htmx/LICENSE",
            "sdv_monitor/dashboard/static/vendor/uplot/LICENSE"} <= names
