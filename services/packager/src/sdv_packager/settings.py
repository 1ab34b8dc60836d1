"""Configuration of the packager: the shared settings plus where the signing key, the VSS
catalog and dependency wheels come from."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Annotated, Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from sdv_events.service import ServiceSettings
from sdv_packager.build.sandbox import BUILD_USER
from sdv_packager.build.wheels import DEFAULT_PLATFORMS, WheelSource
from sdv_packager.domain.manifest import wheel_platform

SERVICE = "packager"
KEY_FILE = "packager-ed25519.pem"


class PackagerSettings(ServiceSettings):
    service: str = SERVICE
    # Generated on first run (owner-only); agents verify against its public key.
    # Default: `$SDV_DATA_DIR/keys/packager-ed25519.pem`, else under ~/.sdv/keys.
    signing_key_path: Path = Field(Path.home() / ".sdv" / "keys" / KEY_FILE,
                                   validation_alias="SDV_PACKAGER_SIGNING_KEY")
    data_dir: Path | None = Field(None, validation_alias="SDV_DATA_DIR")
    # None = the VSS 5.0 catalog shipped with the packager (tools/vss_catalog.py); else a VSS JSON export.
    vss_catalog_path: Path | None = Field(None, validation_alias="SDV_VSS_CATALOG")
    # A local wheelhouse (folder of .whl); with wheels_offline, PyPI is never asked.
    wheelhouse: Path | None = Field(None, validation_alias="SDV_WHEELHOUSE")
    wheels_offline: bool = Field(False, validation_alias="SDV_WHEELS_OFFLINE")
    # The wheel platforms every package carries (comma-separated; `x86_64`/`aarch64` stand for
    # their manylinux2014 tags), unless an app names its own (`[app] platforms`).
    wheel_platforms: Annotated[list[str], NoDecode] = Field(
        list(DEFAULT_PLATFORMS), validation_alias=AliasChoices("SDV_WHEEL_PLATFORMS", "SDV_WHEEL_PLATFORM"))
    # The fleet's Python versions (comma-separated): every package carries wheels for each.
    # Empty: the app's own `python`.
    wheel_pythons: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                          validation_alias="SDV_WHEEL_PYTHONS")
    # As root, pip runs as this unprivileged system user (created on first use): it cannot read
    # the signing key. Not root: the packager cannot switch users (see the README).
    build_user: str = Field(BUILD_USER, validation_alias="SDV_PACKAGER_BUILD_USER")
    # The program that runs pip, before pip's arguments (a shell-quoted command line in the
    # variable); None = the packager's pip, guarded so it never builds. Runs as build_user, in
    # the build sandbox.
    pip_command: Annotated[list[str] | None, NoDecode] = Field(
        None, validation_alias="SDV_PACKAGER_PIP_COMMAND")

    @field_validator("wheel_platforms", "wheel_pythons", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("wheel_platforms")
    @classmethod
    def _platform_tags(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one wheel platform")
        return list(dict.fromkeys(wheel_platform(v) for v in value))

    @field_validator("wheel_pythons")
    @classmethod
    def _python_versions(cls, value: list[str]) -> list[str]:
        for v in value:
            if not re.match(r"^3\.\d{1,2}$", v):
                raise ValueError(f"{v!r} is not a Python version like '3.12'")
        return value

    @field_validator("pip_command", mode="before")
    @classmethod
    def _split_command_line(cls, value: object) -> object:
        if isinstance(value, str):
            return shlex.split(value) or None
        return value

    @model_validator(mode="after")
    def _key_in_data_dir(self) -> Self:
        if "signing_key_path" not in self.model_fields_set and self.data_dir is not None:
            self.signing_key_path = self.data_dir / "keys" / KEY_FILE
        return self

    def wheel_source(self) -> WheelSource:
        return WheelSource(self.wheelhouse, self.wheels_offline, tuple(self.wheel_platforms),
                           tuple(self.wheel_pythons), build_user=self.build_user,
                           pip_command=None if self.pip_command is None else tuple(self.pip_command))


def load_settings() -> PackagerSettings:
    """From the environment; raises `SettingsError` naming the variable of a bad value."""
    return PackagerSettings.load()
