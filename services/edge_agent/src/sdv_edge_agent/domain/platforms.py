"""Which of a package's wheel targets installs on this device: its Python (major.minor) and its
machine's architecture, an exact arch before a pure ("any") target. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from sdv_events.package_format import WheelTarget, platform_key

_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64"}


def machine_arch(machine: str) -> str:
    """`platform.machine()` → the arch wheels are tagged with (`arm64` → `aarch64`)."""
    lowered = machine.lower()
    return _ALIASES.get(lowered, lowered)


def fitting_target(targets: Sequence[WheelTarget], python: str, machine: str) -> WheelTarget | None:
    arch = machine_arch(machine)
    fits = [t for t in targets if t.python == python and t.arch in (arch, "any")]
    return next((t for t in fits if t.arch == arch), fits[0] if fits else None)


def carried(targets: Sequence[WheelTarget]) -> str:
    return ", ".join(sorted({platform_key(t.python, t.arch) for t in targets})) or "none"
