"""The dashboard's browser libraries are vendored, unchanged, with their licences: every file
`vendored.json` lists is there with the recorded hash, and the pages load nothing else."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import sdv_monitor.dashboard

DASHBOARD = Path(sdv_monitor.dashboard.__file__).parent
VENDOR = DASHBOARD / "static" / "vendor"


def test_each_vendored_file_is_the_one_recorded_and_each_library_has_its_licence() -> None:
    record = json.loads((VENDOR / "vendored.json").read_text())
    assert set(record) == {"htmx", "uplot"}
    for folder, info in record.items():
        assert info["version"]
        assert info["integrity"].startswith("sha512-")
        assert "LICENSE" in info["files"]
        on_disk = {p.name for p in (VENDOR / folder).iterdir()}
        assert on_disk == set(info["files"]), folder
        for name, digest in info["sha256"].items():
            assert hashlib.sha256((VENDOR / folder / name).read_bytes()).hexdigest() == digest, (folder, name)


def test_templates_load_scripts_and_styles_only_from_the_monitor_itself() -> None:
    for template in (DASHBOARD / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), template.name
        assert "<style" not in text, template.name  # the CSP allows no inline style
        assert " style=" not in text, template.name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name  # nor inline script
        assert not re.search(r"\son[a-z]+=\"", text), template.name  # nor inline handlers
