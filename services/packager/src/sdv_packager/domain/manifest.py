"""The app manifest (`sdv-app.toml`): a pydantic model whose errors name the field path.

Pure: it parses text it is given; reading the file is the caller's business.
"""

from __future__ import annotations

import re
import tomllib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sdv_packager.domain.dependencies import parse_dependencies

MANIFEST_FILE = "sdv-app.toml"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$")
# https://semver.org/#is-there-a-suggested-regular-expression-regex-to-check-a-semver-string
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|k|ki|kib|mb|m|mi|mib|gb|g|gi|gib)?\s*$", re.I)
_UNIT_MB = {
    "b": 1 / 1_000_000, "kb": 1 / 1000, "k": 1 / 1000, "ki": 1 / 1024, "kib": 1 / 1024,
    "mb": 1, "m": 1, "mi": 1.048576, "mib": 1.048576,
    "gb": 1000, "g": 1000, "gi": 1073.741824, "gib": 1073.741824,
}
MIN_MEMORY_MB = 128
MIN_CPU = 0.1
# Short names of the wheel platforms an app may ask for (`[app] platforms`); full tags pass as is.
ARCH_PLATFORMS = {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64",
                  "armv7l": "manylinux2014_armv7l"}
_PLATFORM_TAG = re.compile(r"^(manylinux(1|2010|2014|_\d+_\d+)|musllinux_\d+_\d+|linux)_[a-z0-9_]+$")
_PYTHON = re.compile(r"^3\.\d{1,2}$")
_APP_FILE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def wheel_platform(value: str) -> str:
    """`aarch64` → `manylinux2014_aarch64`; a platform tag stays itself; else ValueError."""
    tag = ARCH_PLATFORMS.get(value, value)
    if not _PLATFORM_TAG.match(tag):
        raise ValueError(f"{value!r} is not a wheel platform ({', '.join(ARCH_PLATFORMS)} or a tag "
                         "like manylinux_2_28_aarch64)")
    return tag


class ManifestProblem(BaseModel):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{MANIFEST_FILE}: {self.path}: {self.message}"


class ManifestError(ValueError):
    """The manifest is not valid; `problems` lists every field at fault."""

    def __init__(self, problems: list[ManifestProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def parse_memory_mb(value: Any) -> int:
    """`"512MB"`, `"1GB"`, `"256Mi"`, `512` (MB) → whole megabytes."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    match = _SIZE_RE.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a memory size like '512MB' or '1GB'")
    number, unit = float(match.group(1)), (match.group(2) or "mb").lower()
    return int(number * _UNIT_MB[unit])


def parse_cpu(value: Any) -> float:
    """`"0.5"`, `0.5`, `"500m"` (millicores) → cores."""
    text = str(value).strip()
    try:
        return int(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a cpu amount like '0.5' or '500m'") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppSection(_Strict):
    name: str
    version: str
    description: str = ""
    entry_point: str = "main.py"
    python: str = "3.11"
    runtime: Literal["native", "docker"] = "native"
    channel: Literal["dev", "beta", "stable"] = "dev"
    hot_swap: bool = False
    dependencies: list[str] = Field(default_factory=list)
    # A pip requirements file (pins honoured exactly), or a uv.lock, inside the app folder.
    requirements: str | None = None
    constraints: str | None = None  # a pip constraints file inside the app folder
    # Wheel platforms and Python versions the package carries (default: the packager's settings,
    # and `python`): one package installs on each.
    platforms: list[str] = Field(default_factory=list)
    pythons: list[str] = Field(default_factory=list)
    mqtt: bool = False  # talks to the vehicle's MQTT broker (planning needs a device with one)

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(wheel_platform(v) for v in value))

    @field_validator("pythons")
    @classmethod
    def _pythons(cls, value: list[str]) -> list[str]:
        for v in value:
            if not _PYTHON.match(v):
                raise ValueError(f"{v!r} is not a Python version like '3.11'")
        return list(dict.fromkeys(value))

    @field_validator("requirements", "constraints")
    @classmethod
    def _app_file(cls, value: str | None) -> str | None:
        if value is not None and (not _APP_FILE.match(value) or ".." in value.split("/")):
            raise ValueError(f"{value!r} must be a relative path to a file inside the app")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value) or "--" in value:
            raise ValueError(
                f"{value!r} is not a valid app name: lowercase letters, digits and single "
                "hyphens, starting with a letter, 2-64 characters"
            )
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not SEMVER_RE.match(value):
            raise ValueError(f"{value!r} is not a semantic version (x.y.z, optional -pre.release)")
        return value

    @field_validator("python")
    @classmethod
    def _python(cls, value: str) -> str:
        if not _PYTHON.match(value):
            raise ValueError(f"{value!r} is not a Python version like '3.11'")
        return value

    @field_validator("entry_point")
    @classmethod
    def _entry(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/") or not value.endswith(".py"):
            raise ValueError(f"{value!r} must be a relative path to a .py file inside the app")
        return value

    @field_validator("dependencies")
    @classmethod
    def _deps(cls, value: list[str]) -> list[str]:
        parse_dependencies(value)  # DependencyRefused is a ValueError: names every refused line
        return value


class VssSection(_Strict):
    reads: list[str] = Field(default_factory=list)
    writes: list[str] = Field(default_factory=list)


class ResourcesSection(_Strict):
    memory: Annotated[int, Field(description="megabytes")] = 256
    cpu: float = 0.5

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int:
        mb = parse_memory_mb(value)
        if mb < MIN_MEMORY_MB:
            raise ValueError(f"{value!r} is {mb} MB; at least {MIN_MEMORY_MB} MB is required")
        return mb

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> float:
        cores = parse_cpu(value)
        if cores < MIN_CPU:
            raise ValueError(f"{value!r} is {cores} cpu; at least {MIN_CPU} is required")
        return cores


class HealthSection(_Strict):
    alive_for_s: float = Field(default=5.0, gt=0, le=600)
    command: list[str] | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _command(self) -> HealthSection:
        if self.command is not None and not self.command:
            raise ValueError("command, when given, must name a program")
        return self


class SecuritySection(_Strict):
    sandbox: Literal["none", "standard", "strict"] = "standard"
    network: Literal["kuksa-only", "none", "full"] = "kuksa-only"


class AppManifest(_Strict):
    app: AppSection
    vss: VssSection = Field(default_factory=VssSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    health: HealthSection = Field(default_factory=HealthSection)
    security: SecuritySection = Field(default_factory=SecuritySection)


def _problems(exc: ValidationError) -> list[ManifestProblem]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        out.append(ManifestProblem(path=path, message=message))
    return out


def read_toml(text: str) -> dict[str, Any]:
    """TOML text → its tables, or `ManifestError` saying where it does not parse."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError([ManifestProblem(path="(toml)", message=str(exc))]) from None


def manifest_of(data: dict[str, Any]) -> AppManifest:
    """The manifest's tables → `AppManifest`, or `ManifestError` listing every problem."""
    try:
        return AppManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_problems(exc)) from None


def parse_manifest(text: str) -> AppManifest:
    """TOML text → `AppManifest`, or `ManifestError` listing every problem with its path."""
    return manifest_of(read_toml(text))
