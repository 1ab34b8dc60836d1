"""What an app folder declares, whichever way it is written:

- an SDV app: `sdv-app.toml` (dependencies inline, or `requirements` / `constraints` files);
- an Eclipse Velocitas app, unchanged: `app/AppManifest.json` (v3) for the name and the VSS
  datapoints, `app/requirements.txt` (+ `app/constraints.txt`, or a `uv.lock`) for the
  dependencies, `app/src/main.py` as entry point, and its generated `vehicle` model package
  (`gen/vehicle_model`) on the app's Python path. An `sdv-app.toml` beside it may add what
  Velocitas has no field for (version, resources, health, security, platforms): its keys win.

Velocitas manifests carry no version: it comes from the publish request (`sdv package publish
--version`), the `sdv-app.toml`, or a `version` key in the AppManifest, and all that name one
must agree.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdv_packager.build.errors import AppInvalid, Problem
from sdv_packager.domain.dependencies import DependencyRefused
from sdv_packager.domain.manifest import (
    MANIFEST_FILE,
    AppManifest,
    ManifestError,
    manifest_of,
    read_toml,
)
from sdv_packager.domain.requirements import parse_requirements_file, parse_uv_lock
from sdv_packager.domain.velocitas import (
    APP_MANIFEST,
    ENTRY_POINT,
    REQUIREMENTS,
    VelocitasError,
    parse_app_manifest,
)

# Where the Velocitas tool chain puts the generated model (`generatedModelPath`), first found wins.
MODEL_DIRS = ("gen/vehicle_model", "app/vehicle_model", "vehicle_model")
MAX_INCLUDES = 16


@dataclass(frozen=True)
class AppSource:
    manifest: AppManifest
    kind: str  # "sdv" | "velocitas"
    dependencies: list[str] = field(default_factory=list)  # requirement lines for pip
    constraints: list[str] = field(default_factory=list)  # constraint lines (-c) for pip
    python_path: list[str] = field(default_factory=list)
    where: str = MANIFEST_FILE  # the file problems with the manifest are reported against


def _read(app_dir: Path, rel: str, what: str) -> str:
    path = app_dir / rel
    if not path.is_file() or path.is_symlink():
        raise AppInvalid([Problem(rel, f"missing: the {what} file named is not in the app folder")])
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AppInvalid([Problem(rel, f"not UTF-8: {exc}")]) from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def load_app(app_dir: Path, version: str | None = None) -> AppSource:
    toml_path = app_dir / MANIFEST_FILE
    velocitas_path = app_dir / APP_MANIFEST
    if not toml_path.is_file() and not velocitas_path.is_file():
        raise AppInvalid([Problem(MANIFEST_FILE, "missing: the app folder has no manifest (nor an "
                                                 f"Eclipse Velocitas {APP_MANIFEST})")])
    where = APP_MANIFEST if velocitas_path.is_file() else MANIFEST_FILE
    try:
        data = read_toml(_read(app_dir, MANIFEST_FILE, "manifest")) if toml_path.is_file() else {}
        if velocitas_path.is_file():
            found = parse_app_manifest(_read(app_dir, APP_MANIFEST, "manifest"))
            app: dict[str, Any] = {"name": found.name, "entry_point": ENTRY_POINT, "mqtt": found.pubsub}
            if found.version:
                app["version"] = found.version
            if (app_dir / REQUIREMENTS).is_file():
                app["requirements"] = REQUIREMENTS
            elif (app_dir / "uv.lock").is_file():
                app["requirements"] = "uv.lock"
            if (app_dir / "app/constraints.txt").is_file():
                app["constraints"] = "app/constraints.txt"
            data = _merge({"app": app, "vss": {"reads": found.reads, "writes": found.writes}}, data)
        app_table = data.get("app")
        if version is not None and isinstance(app_table, dict):
            named = app_table.get("version")
            if named is not None and named != version:
                raise AppInvalid([Problem(f"{where}: app.version",
                                          f"{named!r} differs from the version published, {version!r}")])
            app_table["version"] = version
        if isinstance(app_table, dict) and "version" not in app_table and where == APP_MANIFEST:
            raise AppInvalid([Problem(f"{where}: app.version", "missing: a Velocitas AppManifest has "
                                      "no version; publish with --version X.Y.Z or add [app] version "
                                      f"to {MANIFEST_FILE}")])
        manifest = manifest_of(data)
    except VelocitasError as exc:
        raise AppInvalid([Problem(f"{APP_MANIFEST}: {w}", m) for w, m in exc.problems]) from None
    except ManifestError as exc:
        raise AppInvalid([Problem(f"{where}: {p.path}", p.message) for p in exc.problems]) from None
    dependencies, constraints = _dependency_files(app_dir, manifest)
    python_path = _python_path(app_dir) if where == APP_MANIFEST else []
    return AppSource(manifest, "velocitas" if where == APP_MANIFEST else "sdv",
                     [*manifest.app.dependencies, *dependencies], constraints, python_path, where)


def _dependency_files(app_dir: Path, manifest: AppManifest) -> tuple[list[str], list[str]]:
    """(requirement lines, constraint lines) from the files the app names."""
    a = manifest.app
    requirements: list[str] = []
    constraints: list[str] = []
    try:
        if a.requirements is not None and Path(a.requirements).name == "uv.lock":
            lock = parse_uv_lock(_read(app_dir, a.requirements, "lock"), a.requirements)
            requirements += lock.requirements
            constraints += lock.pins
        elif a.requirements is not None:
            _include(app_dir, a.requirements, requirements, constraints, seen=set())
        if a.constraints is not None:
            _include(app_dir, a.constraints, constraints, constraints, seen=set())
    except DependencyRefused as exc:
        raise AppInvalid([Problem(a.requirements or a.constraints or MANIFEST_FILE, str(exc))]) from None
    return requirements, constraints


def _include(app_dir: Path, rel: str, lines: list[str], constraints: list[str], seen: set[str]) -> None:
    """A requirements file and the files it references (`-r`, `-c`), relative to it."""
    if rel in seen or len(seen) >= MAX_INCLUDES:
        raise DependencyRefused(f"{rel}: included twice or too many files (-r / -c)")
    seen.add(rel)
    parsed = parse_requirements_file(_read(app_dir, rel, "requirements"), rel)
    lines += parsed.lines
    base = Path(rel).parent
    for other in parsed.requirements:
        _include(app_dir, _inside(base, other), lines, constraints, seen)
    for other in parsed.constraints:
        _include(app_dir, _inside(base, other), constraints, constraints, seen)


def _inside(base: Path, rel: str) -> str:
    path = posixpath.normpath((base / rel).as_posix())
    if rel.startswith("/") or path.split("/")[0] == ".." or "://" in rel:
        raise DependencyRefused(f"{rel!r} is not a file inside the app")
    return path


def _python_path(app_dir: Path) -> list[str]:
    """The entry point's folder, and the generated `vehicle` model when the app has one."""
    found = [d for d in MODEL_DIRS if (app_dir / d / "vehicle" / "__init__.py").is_file()]
    return [str(Path(ENTRY_POINT).parent), *found[:1]]
