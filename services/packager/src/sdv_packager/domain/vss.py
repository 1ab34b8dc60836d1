"""VSS catalog: which signals exist, their kind (sensor/actuator/attribute), datatype and unit.

Accepts the compact flat form we ship (`{"signals": {"Vehicle.Speed": {...}}}`) and a full VSS
JSON export (the nested `{"Vehicle": {"type": "branch", "children": {...}}}` tree).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Literal

SignalKind = Literal["sensor", "actuator", "attribute"]
_KINDS = ("sensor", "actuator", "attribute")


@dataclass(frozen=True)
class Signal:
    path: str
    kind: SignalKind
    datatype: str
    unit: str | None = None
    description: str = ""


@dataclass(frozen=True)
class SignalProblem:
    path: str
    message: str


class VssCatalog:
    def __init__(self, signals: dict[str, Signal], version: str = "unknown") -> None:
        self.signals = signals
        self.version = version

    @classmethod
    def from_json(cls, raw: bytes | str) -> VssCatalog:
        data = json.loads(raw)
        if isinstance(data, dict) and "signals" in data:
            signals = {p: _signal(p, node) for p, node in data["signals"].items()}
            return cls(signals, str(data.get("vss_version", "unknown")))
        signals = {}
        for root, node in data.items():
            _walk(root, node, signals)
        return cls(signals, "export")

    def get(self, path: str) -> Signal | None:
        return self.signals.get(path)

    def check_usage(self, reads: list[str], writes: list[str]) -> list[SignalProblem]:
        """Every declared signal must exist; an app may write only actuators."""
        problems = []
        for usage, paths in (("reads", reads), ("writes", writes)):
            for path in paths:
                signal = self.get(path)
                if signal is None:
                    close = difflib.get_close_matches(path, self.signals, n=1, cutoff=0.8)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    problems.append(SignalProblem(
                        f"vss.{usage}", f"{path} is not in the VSS catalog {self.version}{hint}"
                    ))
                elif usage == "writes" and signal.kind != "actuator":
                    problems.append(SignalProblem(
                        "vss.writes",
                        f"{path} is a {signal.kind}; apps may only write actuators",
                    ))
        return problems


def _signal(path: str, node: dict[str, Any]) -> Signal:
    kind = node.get("type")
    if kind not in _KINDS:
        raise ValueError(f"catalog entry {path}: type {kind!r} is not sensor/actuator/attribute")
    return Signal(path, kind, str(node.get("datatype", "string")), node.get("unit"),
                  str(node.get("description", "")))


def _walk(path: str, node: dict[str, Any], out: dict[str, Signal]) -> None:
    if node.get("type") == "branch":
        for name, child in (node.get("children") or {}).items():
            _walk(f"{path}.{name}", child, out)
    elif node.get("type") in _KINDS:
        out[path] = _signal(path, node)
