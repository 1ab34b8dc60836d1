"""Planning a rollout: which devices can take the package, and in which waves.

Pure: the registry's answers (device ids, capabilities) come in as arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sdv_events.errors import DomainError
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import Strategy


@dataclass(frozen=True)
class DeviceFacts:
    """What planning needs to know about a device (from the registry)."""

    device_id: str
    arch: str = "x86_64"
    runtimes: tuple[str, ...] = ("native",)
    python_version: str = "3.11"
    kuksa: bool = False
    status: str = "accepted"
    mqtt: bool = False
    # The signal catalogue its databroker serves: its digest (capabilities), and path → kind
    # once resolved (None: not reported, or not resolved — then no signal is checked).
    catalog_digest: str | None = None
    catalog: Mapping[str, str] | None = None
    online: bool = True  # the registry's presence (heartbeats): offline devices are planned last
    labels: Mapping[str, str] = field(default_factory=dict)  # for label maintenance windows


def wave_sizes(spec: Sequence[str], total: int) -> list[int]:
    """Cumulative wave targets (`"1"`, `"10%"`) → sizes of each wave; the last reaches `total`."""
    cumulative: list[int] = []
    for raw in spec:
        text = raw.strip()
        try:
            if text.endswith("%"):
                share = float(text[:-1])
                if not 0 < share <= 100:
                    raise ValueError
                count = max(1, math.ceil(total * share / 100))
            else:
                count = int(text)
                if count < 1:
                    raise ValueError
        except ValueError:
            raise DomainError(
                f"wave {raw!r} is not a device count (>= 1) or a percentage in (0, 100]",
                code="invalid_request",
            ) from None
        cumulative.append(min(count, total))
    if not cumulative or cumulative[-1] < total:
        cumulative.append(total)
    sizes, reached = [], 0
    for target in cumulative:
        if target > reached:
            sizes.append(target - reached)
            reached = target
    return sizes


def plan_waves(device_ids: Sequence[str], strategy: Strategy) -> list[list[str]]:
    """Partition devices into waves: every device in exactly one wave, order kept."""
    devices = list(dict.fromkeys(device_ids))
    if not devices:
        return []
    if strategy.kind == "all-at-once":
        return [devices]
    if strategy.kind == "rolling":
        if strategy.batch_size < 1:
            raise DomainError("batch_size must be at least 1", code="invalid_request")
        size = strategy.batch_size
        return [devices[i:i + size] for i in range(0, len(devices), size)]
    waves, start = [], 0
    for size in wave_sizes(strategy.waves, len(devices)):
        waves.append(devices[start:start + size])
        start += size
    return waves


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def platform_problem(package: PackageInfo, device: DeviceFacts) -> str | None:
    """None when one of the package's platforms (`<python>/<arch>`) fits the device: its arch
    (or a pure "any" target) and, natively, its Python (a docker image runs the package's own)."""
    python = _minor(device.python_version) if package.runtime == "native" else _minor(package.python_version)
    for carried in package.platforms:
        carried_python, _, arch = carried.partition("/")
        if carried_python == python and arch in (device.arch, "any"):
            return None
    return (f"no platform of the package fits {device.arch}/python {python} "
            f"(it carries {', '.join(package.platforms)})")


def signal_problem(package: PackageInfo, device: DeviceFacts) -> str | None:
    """The device's databroker must serve every declared signal, and as an actuator what the
    app sets (unchecked while its catalogue is unknown)."""
    if device.catalog is None:
        return None
    missing = [s for s in dict.fromkeys([*package.vss_reads, *package.vss_writes]) if s not in device.catalog]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"databroker lacks signal {', '.join(missing[:3])}{more}"
    for signal in package.vss_writes:
        if device.catalog[signal] != "actuator":
            return f"databroker serves {signal} as a {device.catalog[signal]}, not an actuator to set"
    return None


def why_excluded(package: PackageInfo, device: DeviceFacts, arches: frozenset[str]) -> str | None:
    """The reason a device cannot run the package, or None when it can."""
    if device.status != "accepted":
        return f"device is {device.status}"
    if package.runtime not in device.runtimes:
        return f"no {package.runtime} runtime (has {', '.join(device.runtimes) or 'none'})"
    if package.platforms:
        # The package says where its wheels install; the older checks below guess from names.
        platform = platform_problem(package, device)
        if platform is not None:
            return platform
    elif arches and device.arch not in arches:
        return f"arch {device.arch} not supported by the package ({', '.join(sorted(arches))})"
    # Agents report the interpreter's full version (3.11.9); packages name major.minor (3.11).
    elif package.runtime == "native" and _minor(device.python_version) != _minor(package.python_version):
        return f"python {device.python_version}, package needs {package.python_version}"
    if (package.vss_reads or package.vss_writes) and not device.kuksa:
        return "no KUKSA databroker"
    if package.mqtt and not device.mqtt:
        return "no MQTT broker (the app publishes and subscribes through one)"
    return signal_problem(package, device)


def eligible(
    package: PackageInfo, devices: Sequence[DeviceFacts], arches: frozenset[str] = frozenset()
) -> tuple[list[str], dict[str, str]]:
    """(device ids that can take the package, sorted) and (excluded id → reason)."""
    ok, excluded = [], {}
    for device in devices:
        reason = why_excluded(package, device, arches)
        if reason is None:
            ok.append(device.device_id)
        else:
            excluded[device.device_id] = reason
    return sorted(ok), dict(sorted(excluded.items()))


def package_arches(package: PackageInfo) -> frozenset[str]:
    """Architectures a package's bundled wheels pin it to (pure-Python wheels pin nothing)."""
    arches: set[str] = set()
    for wheel in package.bundled_wheels:
        platform_tag = wheel.removesuffix(".whl").split("-")[-1]
        for tag in platform_tag.split("."):
            for arch in ("x86_64", "aarch64", "armv7l"):
                if tag.endswith(arch):
                    arches.add(arch)
    return frozenset(arches)

