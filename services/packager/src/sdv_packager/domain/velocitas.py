"""An Eclipse Velocitas app's `AppManifest.json` (manifest v3) read as what the packager needs:
the app's name, the VSS datapoints it declares (read → vss.reads, write → vss.writes) and
whether it talks pub/sub (the vehicle's MQTT broker).

    {"manifestVersion": "v3", "name": "SampleApp", "interfaces": [
        {"type": "vehicle-signal-interface", "config": {"src": "…vss_rel_4.0.json",
         "datapoints": {"required": [{"path": "Vehicle.Speed", "access": "read"}]}}},
        {"type": "pubsub", "config": {"reads": ["sampleapp/getSpeed"], "writes": [...]}}]}

Pure: parses the text it is given; `VelocitasError` lists every problem with its JSON path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

APP_MANIFEST = "app/AppManifest.json"
ENTRY_POINT = "app/src/main.py"
REQUIREMENTS = "app/requirements.txt"
SIGNALS = "vehicle-signal-interface"
PUBSUB = "pubsub"
_ACCESS = ("read", "write")


class VelocitasError(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{APP_MANIFEST}: {where}: {what}" for where, what in problems))
        self.problems = problems


@dataclass(frozen=True)
class VelocitasApp:
    name: str  # as the packager names apps (lowercase, hyphens), from the manifest's name
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    pubsub: bool = False
    vss_source: str = ""  # the VSS release the app was generated against (config.src)
    version: str | None = None  # not a v3 field; taken when a manifest carries one


def app_name(name: str) -> str:
    """`SampleApp` → `sampleapp`, `Seat_Adjuster App` → `seat-adjuster-app`: Velocitas itself
    lowercases the name for topics and deployments; anything else becomes a hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def parse_app_manifest(text: str) -> VelocitasApp:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VelocitasError([("(json)", f"not JSON: {exc}")]) from None
    if isinstance(data, list) and len(data) == 1:  # manifest v1/v2 wrapped the app in a list
        raise VelocitasError([("manifestVersion", "manifest v1/v2 (a list) is not supported: "
                                                  "migrate to v3 (`velocitas upgrade`)")])
    if not isinstance(data, dict):
        raise VelocitasError([("(root)", "must be a JSON object")])
    problems: list[tuple[str, str]] = []
    if str(data.get("manifestVersion", "")).lower() != "v3":
        problems.append(("manifestVersion", f"{data.get('manifestVersion')!r}: only v3 is supported"))
    name = data.get("name")
    if not isinstance(name, str) or not app_name(name):
        problems.append(("name", "must name the app"))
    reads: list[str] = []
    writes: list[str] = []
    pubsub = False
    source = ""
    interfaces = data.get("interfaces", [])
    if not isinstance(interfaces, list):
        problems.append(("interfaces", "must be a list"))
        interfaces = []
    for i, interface in enumerate(interfaces):
        where = f"interfaces[{i}]"
        if not isinstance(interface, dict):
            problems.append((where, "must be an object"))
            continue
        config = interface.get("config") or {}
        if interface.get("type") == PUBSUB:
            pubsub = True
        elif interface.get("type") == SIGNALS:
            source = str(config.get("src", ""))
            _datapoints(config, where, reads, writes, problems)
    if problems:
        raise VelocitasError(problems)
    version = data.get("version")
    return VelocitasApp(app_name(str(name)), sorted(set(reads)), sorted(set(writes)), pubsub, source,
                        version if isinstance(version, str) else None)


def _datapoints(config: dict[str, Any], where: str, reads: list[str], writes: list[str],
                problems: list[tuple[str, str]]) -> None:
    required = (config.get("datapoints") or {}).get("required", [])
    if not isinstance(required, list):
        problems.append((f"{where}.config.datapoints.required", "must be a list"))
        return
    for j, point in enumerate(required):
        at = f"{where}.config.datapoints.required[{j}]"
        if not isinstance(point, dict) or not isinstance(point.get("path"), str):
            problems.append((at, "must be an object with a path"))
            continue
        access = point.get("access", "read")
        if access not in _ACCESS:
            problems.append((f"{at}.access", f"{access!r} is not read or write"))
            continue
        (writes if access == "write" else reads).append(point["path"])
