"""Bundle dependency wheels so a vehicle installs offline: `pip download` resolved for each
Python and platform the package carries (x86_64 and aarch64 manylinux by default), from an
index or from a local folder of wheels (`--no-index`), honouring the app's constraints (pins,
a lock) exactly. The package records which wheels install where (`WheelTarget`) and every
resolved version (`name==version`), so the same input rebuilds the same artifact.

Wheels only, and pip never runs with access to the signing key: the dependency lines are checked
first (no URL, path, VCS or option lines, `domain/dependencies.py`), pip runs guarded so that it
builds nothing (`pip_guard.py`) and in a `Sandbox` (another user when the packager is root, a
scrubbed environment always), and what it downloaded is read back as plain wheel files only.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sdv_events.package_format import WheelTarget
from sdv_packager.build.errors import AppInvalid, Problem
from sdv_packager.build.sandbox import (
    BUILD_USER,
    SAFE_PATH,
    Account,
    BuildEnvironmentError,
    OutputRefused,
    Sandbox,
    build_account,
)
from sdv_packager.domain.dependencies import Dependency, DependencyRefused, parse_dependencies

WHERE = "sdv-app.toml: app.dependencies"
MAX_WHEELS_BYTES = 512 * 1024 * 1024
# Most vehicles are aarch64; x86_64 for development machines and simulators.
DEFAULT_PLATFORMS = ("manylinux2014_x86_64", "manylinux2014_aarch64")
_PLATFORM_PREFIX = re.compile(r"^(manylinux(1|2010|2014|_\d+_\d+)|musllinux_\d+_\d+|linux)_")


@dataclass(frozen=True)
class WheelSource:
    """Where wheels come from. `find_links` + `no_index` = fully offline (a wheelhouse)."""

    find_links: Path | None = None
    no_index: bool = False
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    # Python versions every package carries wheels for (the fleet's); empty = the app's own.
    pythons: tuple[str, ...] = ()
    timeout_s: float = 300.0
    # Who pip runs as when the packager is root (a system user, created on first use).
    build_user: str = BUILD_USER
    # The command that runs pip, before its arguments; None = guarded pip (`pip_guard.py`).
    pip_command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BundledWheels:
    files: dict[str, bytes] = field(default_factory=dict)  # wheels/<file>.whl → bytes
    targets: list[WheelTarget] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)  # name==version, every target's


_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(.+)$")


def compatible_platforms(platform: str) -> list[str]:
    """Every wheel platform tag a device of `platform` installs: pip matches `--platform` tags
    literally, so `manylinux2014_aarch64` alone misses grpcio's `manylinux_2_17_aarch64` wheel.
    A manylinux tag stands for its glibc and every older one (PEP 600), legacy aliases included."""
    legacy = next(((name, glibc) for name, glibc in _LEGACY.items() if platform.startswith(name + "_")), None)
    if legacy is not None:
        glibc, arch = legacy[1], platform.removeprefix(legacy[0] + "_")
    elif (match := _MANYLINUX.match(platform)) is not None:
        glibc, arch = (int(match.group(1)), int(match.group(2))), match.group(3)
    else:
        return [platform]
    tags = []
    for minor in range(glibc[1], 4, -1):
        tags.append(f"manylinux_{glibc[0]}_{minor}_{arch}")
        tags += [f"{name}_{arch}" for name, at in _LEGACY.items() if at == (glibc[0], minor)]
    return tags


def arch_of(platform: str) -> str:
    """`manylinux2014_aarch64` → `aarch64`."""
    return _PLATFORM_PREFIX.sub("", platform)


def _is_pure(wheel: str) -> bool:
    return wheel.removesuffix(".whl").rsplit("-", 1)[-1] == "any"


def pin_of(wheel: str) -> str:
    name, version = wheel.split("-")[:2]
    return f"{name.lower().replace('_', '-')}=={version}"


def download_wheels(
    dependencies: list[str], pythons: list[str], source: WheelSource, *,
    constraints: list[str] | None = None, platforms: list[str] | None = None, where: str = WHERE,
) -> BundledWheels:
    """The wheels of the dependencies and their dependencies, resolved once per (python,
    platform). A python whose first platform resolves to pure wheels only needs no other: those
    wheels install anywhere (its target's arch is "any"). Resolutions run side by side."""
    if not dependencies:
        return BundledWheels()
    try:
        parsed = parse_dependencies(dependencies)
        pinned = parse_dependencies(constraints or [])
    except DependencyRefused as exc:
        raise AppInvalid([Problem(where, str(exc))]) from None
    chosen = list(dict.fromkeys(platforms or source.platforms))
    account = build_account(source.build_user)

    def one(python: str, platform: str) -> dict[str, bytes]:
        return _download(parsed, pinned, python, platform, source, account, where)

    def for_python(python: str) -> list[tuple[WheelTarget, dict[str, bytes]]]:
        first = one(python, chosen[0])
        if all(_is_pure(name) for name in first):
            return [(WheelTarget(python=python, platform=chosen[0], arch="any", wheels=sorted(first)), first)]
        found = [(chosen[0], first)]
        with ThreadPoolExecutor(max_workers=max(1, len(chosen) - 1)) as pool:
            found += zip(chosen[1:], pool.map(lambda p: one(python, p), chosen[1:]), strict=True)
        return [(WheelTarget(python=python, platform=p, arch=arch_of(p), wheels=sorted(w)), w)
                for p, w in found]

    with ThreadPoolExecutor(max_workers=len(pythons)) as pool:
        results = [pair for chain in pool.map(for_python, pythons) for pair in chain]
    files: dict[str, bytes] = {}
    for _, wheels in results:
        files.update((f"wheels/{name}", data) for name, data in wheels.items())
    if sum(len(d) for d in files.values()) > MAX_WHEELS_BYTES:
        raise AppInvalid([Problem(where, f"wheels exceed {MAX_WHEELS_BYTES // (1024 * 1024)} MB")])
    resolved = sorted({pin_of(name) for target, _ in results for name in target.wheels})
    return BundledWheels(files, [t for t, _ in results], resolved)


def _download(parsed: list[Dependency], constraints: list[Dependency], python_version: str,
              platform: str, source: WheelSource, account: Account | None, where: str) -> dict[str, bytes]:
    """`pip download` for one python/platform in a sandbox of its own: file name → bytes."""
    with Sandbox(account) as box:
        lines = "".join(f"{d.requirements_line()}\n" for d in parsed)
        requirements = box.put_input("requirements.txt", lines.encode())
        args = [
            *(source.pip_command or guarded_pip(account)), "download", "--isolated", "--no-input",
            "--no-cache-dir", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
            "--dest", str(box.out), "--python-version", python_version, "--implementation", "cp",
            *(f"--platform={tag}" for tag in [*compatible_platforms(platform), "any"]),
        ]
        if constraints:
            pins = "".join(f"{d.requirement}\n" for d in constraints)
            args += ["-c", str(box.put_input("constraints.txt", pins.encode()))]
        if source.find_links is not None:
            args += ["--find-links", str(_stage_wheelhouse(box, source.find_links))]
        if source.no_index:
            args.append("--no-index")
        try:
            result = box.run([*args, "-r", str(requirements)], source.timeout_s)
        except subprocess.TimeoutExpired:
            took = f"resolving wheels took over {source.timeout_s:.0f} s"
            raise AppInvalid([Problem(where, took)]) from None
        if result.returncode != 0:
            # pip's words, without the sandbox's temporary paths (they mean nothing to the user).
            said = (result.stderr or result.stdout).replace(str(box.root), "<build>")
            detail = said.strip().splitlines()[-3:]
            raise AppInvalid([Problem(where, "cannot resolve wheels for python "
                                      f"{python_version}/{platform}: " + " | ".join(detail))])
        try:
            return box.read_outputs(".whl", MAX_WHEELS_BYTES)
        except OutputRefused as exc:
            raise AppInvalid([Problem(where, f"refused what pip downloaded: {exc}")]) from None


def _stage_wheelhouse(box: Sandbox, wheelhouse: Path) -> Path:
    """The wheelhouse's wheels inside the sandbox (the build user may not reach the original);
    sdists in it are left out: they could only be built."""
    staged = box.inputs / "wheelhouse"
    staged.mkdir(mode=0o755)
    for wheel in sorted(wheelhouse.glob("*.whl")):
        if wheel.is_file() and not wheel.is_symlink():
            box.link_input(wheel, f"wheelhouse/{wheel.name}")
    return staged


def guarded_pip(account: Account | None) -> tuple[str, ...]:
    """`python -I -c <pip_guard source> <pip's parent dir>`: the packager's pip, run by an
    interpreter the build user can execute."""
    spec = importlib.util.find_spec("pip")
    if spec is None or spec.origin is None:
        raise BuildEnvironmentError("pip is not installed next to the packager")
    pip_parent = str(Path(spec.origin).parent.parent)
    guard = Path(__file__).with_name("pip_guard.py").read_text(encoding="utf-8")
    return (_interpreter(account, pip_parent), "-I", "-c", guard, pip_parent)


@functools.lru_cache(maxsize=8)
def _interpreter(account: Account | None, pip_parent: str) -> str:
    """This interpreter, or (as root, when the build user cannot reach it, e.g. under /root) the
    first system `python3` that can import the packager's pip as the build user."""
    if account is None:
        return sys.executable
    candidates = [sys.executable, getattr(sys, "_base_executable", sys.executable),
                  shutil.which("python3", path=SAFE_PATH), "/usr/bin/python3"]
    probe = f"import sys; sys.path.insert(0, {pip_parent!r}); import pip._internal.cli.main"
    for python in dict.fromkeys(c for c in candidates if c):
        try:
            result = subprocess.run(
                [python, "-I", "-c", probe], user=account.uid, group=account.gid, extra_groups=[],
                env={"PATH": SAFE_PATH}, cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                timeout=60, check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return python
    raise BuildEnvironmentError(
        f"no Python interpreter that user {account.name!r} can run imports pip from {pip_parent}; "
        "make the packager's interpreter readable by that user or set SDV_PACKAGER_PIP_COMMAND"
    )
