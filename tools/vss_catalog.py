"""Generates the packager's VSS catalog (`services/packager/src/sdv_packager/data/vss_catalog.json`)
from a COVESA VSS release with COVESA's own `vss-tools` (PyPI), the full tree with instances
expanded: every sensor, actuator and attribute, with datatype, unit, description and allowed
values, and the release recorded as `vss_version`.

    uv run --with vss-tools==6.1.0 python tools/vss_catalog.py SPEC_DIR --version 5.0

SPEC_DIR is the `spec/` folder of the release (github.com/COVESA/vehicle_signal_specification,
tag v5.0: VehicleSignalSpecification.vspec, units.yaml, quantities.yaml). This machine reaches no
host but the package registries, and no package ships the release's .vspec files, so the JSON is
generated once here and committed; run this again to move to another release. vss-tools 6.1
reads releases 5.0 and later (4.x units files lack fields it requires, 6.0 has a duplicate unit).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

OUT = Path(__file__).parents[1] / "services/packager/src/sdv_packager/data/vss_catalog.json"
KINDS = ("sensor", "actuator", "attribute")
KEPT = ("type", "datatype", "unit", "description", "allowed", "min", "max")


def export(spec_dir: Path) -> dict[str, Any]:
    """The release's tree as vss-tools exports it (`vspec export json`, instances expanded)."""
    vspec = shutil.which("vspec")
    if vspec is None:
        raise SystemExit("vspec (vss-tools) is not installed: uv run --with vss-tools==6.1.0 ...")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vss.json"
        command = [vspec, "export", "json", "--vspec", str(spec_dir / "VehicleSignalSpecification.vspec"),
                   "--units", str(spec_dir / "units.yaml"), "--output", str(out)]
        if (spec_dir / "quantities.yaml").is_file():
            command += ["--quantities", str(spec_dir / "quantities.yaml")]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"vss-tools failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        tree: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return tree


def flatten(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    signals: dict[str, dict[str, Any]] = {}

    def walk(path: str, node: dict[str, Any]) -> None:
        if node.get("type") == "branch":
            for name, child in (node.get("children") or {}).items():
                walk(f"{path}.{name}", child)
        elif node.get("type") in KINDS:
            signals[path] = {k: node[k] for k in KEPT if k in node}

    for root, node in tree.items():
        walk(root, node)
    return dict(sorted(signals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec_dir", type=Path, help="the release's spec/ folder")
    parser.add_argument("--version", required=True, help="the release, e.g. 5.0")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    signals = flatten(export(args.spec_dir))
    try:
        tools_version = metadata.version("vss-tools")
    except metadata.PackageNotFoundError:
        tools_version = "unknown"
    document = {
        "note": f"COVESA VSS {args.version}, the full tree with instances expanded, exported by "
                f"vss-tools {tools_version} (tools/vss_catalog.py). Do not edit: regenerate.",
        "vss_version": args.version,
        "signals": signals,
    }
    args.output.write_text(json.dumps(document, indent=0, sort_keys=False, ensure_ascii=False) + "\n",
                           encoding="utf-8")
    print(f"{args.output}: {len(signals)} signals of VSS {args.version}")


if __name__ == "__main__":
    main()
