"""`sdv app init NAME`: the folder it writes is a working app — a manifest the packager accepts
with every field explained, a main.py on the generated signal library, a test that passes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sdv_client.app_template import NAME_RE
from sdv_client.cli import app
from sdv_packager.domain.manifest import NAME_RE as PACKAGER_NAME_RE
from sdv_packager.domain.manifest import AppManifest, parse_manifest


def init(*args: str) -> Result:
    return CliRunner().invoke(app, ["app", "init", *args])


def test_the_manifest_is_valid_and_explains_every_field_the_packager_reads(tmp_path: Path) -> None:
    folder = tmp_path / "speed-demo"
    result = init("speed-demo", "--dir", str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert sorted(Path(f).name for f in json.loads(result.stdout)["files"]) == [
        "main.py", "sdv-app.toml", "test_main.py"]
    text = (folder / "sdv-app.toml").read_text()
    manifest = parse_manifest(text)
    assert (manifest.app.name, manifest.vss.reads) == ("speed-demo", ["Vehicle.Speed"])
    assert manifest.app.dependencies == ["kuksa-client>=0.4"]  # what the signal library needs

    lines = text.splitlines()
    for section, model in AppManifest.model_fields.items():
        assert f"[{section}]" in lines
        assert model.annotation is not None
        for field in model.annotation.model_fields:  # type: ignore[union-attr]
            at = next((i for i, line in enumerate(lines)
                       if re.match(rf"^(# )?{field} = ", line)), None)
            assert at is not None, f"{section}.{field} is not in the manifest"
            assert lines[at - 1].startswith("#"), f"{section}.{field} has no explanation above it"


def test_main_reads_the_signal_through_the_generated_library_and_its_test_passes(tmp_path: Path) -> None:
    assert init("speed-demo", "--dir", str(tmp_path / "app")).exit_code == 0
    main = (tmp_path / "app" / "main.py").read_text()
    assert "from vehicle_signals import connect" in main
    assert "vehicle.speed.subscribe()" in main
    done = subprocess.run([sys.executable, "-m", "unittest", "-v"], cwd=tmp_path / "app",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Ran 2 tests" in done.stderr


def test_the_clients_name_rule_is_the_packagers() -> None:
    assert NAME_RE.pattern == PACKAGER_NAME_RE.pattern


@pytest.mark.parametrize("name", ["Speed", "9lives", "a--b", "x", "ends-"])
def test_a_name_the_packager_would_refuse_writes_nothing(tmp_path: Path, name: str) -> None:
    result = init(name, "--dir", str(tmp_path / "app"), "--json")
    assert result.exit_code == 2
    assert "not a valid app name" in json.loads(result.stdout)["error"]
    assert not (tmp_path / "app").exists()


def test_a_folder_in_use_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "notes.txt").write_text("mine")
    result = init("speed-demo", "--dir", str(tmp_path / "app"))
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["notes.txt"]
