"""Bundle dependency wheels so a vehicle installs offline: `pip download` resolved for the
device's Python and platform, from an index or from a local folder of wheels (`--no-index`).

Wheels only, and pip never runs with access to the signing key: the dependency lines are checked
first (no URL, path, VCS or option lines, `domain/dependencies.py`), pip runs guarded so that it
builds nothing (`pip_guard.py`) and in a `Sandbox` (another user when the packager is root, a
scrubbed environment always), and what it downloaded is read back as plain wheel files only.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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
from sdv_packager.domain.dependencies import DependencyRefused, parse_dependencies

WHERE = "sdv-app.toml: app.dependencies"
MAX_WHEELS_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class WheelSource:
    """Where wheels come from. `find_links` + `no_index` = fully offline (a wheelhouse)."""

    find_links: Path | None = None
    no_index: bool = False
    platform: str = "manylinux2014_x86_64"
    timeout_s: float = 300.0
    # Who pip runs as when the packager is root (a system user, created on first use).
    build_user: str = BUILD_USER
    # The command that runs pip, before its arguments; None = guarded pip (`pip_guard.py`).
    pip_command: tuple[str, ...] | None = None


def download_wheels(
    dependencies: list[str], python_version: str, source: WheelSource
) -> dict[str, bytes]:
    """`wheels/<file>.whl` → bytes for the dependencies and their dependencies."""
    if not dependencies:
        return {}
    try:
        parsed = parse_dependencies(dependencies)
    except DependencyRefused as exc:
        raise AppInvalid([Problem(WHERE, str(exc))]) from None
    account = build_account(source.build_user)
    with Sandbox(account) as box:
        lines = "".join(f"{d.requirements_line()}\n" for d in parsed)
        requirements = box.put_input("requirements.txt", lines.encode())
        args = [
            *(source.pip_command or guarded_pip(account)), "download", "--isolated", "--no-input",
            "--no-cache-dir", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
            "--dest", str(box.out), "--python-version", python_version, "--implementation", "cp",
            "--platform", source.platform, "--platform", "any",
        ]
        if source.find_links is not None:
            args += ["--find-links", str(_stage_wheelhouse(box, source.find_links))]
        if source.no_index:
            args.append("--no-index")
        try:
            result = box.run([*args, "-r", str(requirements)], source.timeout_s)
        except subprocess.TimeoutExpired:
            took = f"resolving wheels took over {source.timeout_s:.0f} s"
            raise AppInvalid([Problem(WHERE, took)]) from None
        if result.returncode != 0:
            # pip's words, without the sandbox's temporary paths (they mean nothing to the user).
            said = (result.stderr or result.stdout).replace(str(box.root), "<build>")
            detail = said.strip().splitlines()[-3:]
            raise AppInvalid([Problem(WHERE, "cannot resolve wheels for python "
                                      f"{python_version}/{source.platform}: " + " | ".join(detail))])
        try:
            wheels = box.read_outputs(".whl", MAX_WHEELS_BYTES)
        except OutputRefused as exc:
            raise AppInvalid([Problem(WHERE, f"refused what pip downloaded: {exc}")]) from None
    return {f"wheels/{name}": data for name, data in wheels.items()}


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
