"""Configuration of the packager: the shared settings plus where the signing key, the VSS
catalog and dependency wheels come from."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from sdv_events.service import ServiceSettings
from sdv_packager.build.sandbox import BUILD_USER
from sdv_packager.build.wheels import WheelSource

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
    wheel_platform: str = Field("manylinux2014_x86_64", validation_alias="SDV_WHEEL_PLATFORM")
    # As root, pip runs as this unprivileged system user (created on first use): it cannot read
    # the signing key. Not root: the packager cannot switch users (see the README).
    build_user: str = Field(BUILD_USER, validation_alias="SDV_PACKAGER_BUILD_USER")
    # The program that runs pip, before pip's arguments (a shell-quoted command line in the
    # variable); None = the packager's pip, guarded so it never builds. Runs as build_user, in
    # the build sandbox.
    pip_command: Annotated[list[str] | None, NoDecode] = Field(
        None, validation_alias="SDV_PACKAGER_PIP_COMMAND")

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
        return WheelSource(self.wheelhouse, self.wheels_offline, self.wheel_platform,
                           build_user=self.build_user,
                           pip_command=None if self.pip_command is None else tuple(self.pip_command))


def load_settings() -> PackagerSettings:
    """From the environment; raises `SettingsError` naming the variable of a bad value."""
    return PackagerSettings.load()
