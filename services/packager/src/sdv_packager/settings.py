"""Configuration of the packager: the shared settings plus where the signing key, the VSS
catalog and dependency wheels come from."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from sdv_events.service import ServiceSettings
from sdv_packager.build.sandbox import BUILD_USER
from sdv_packager.build.wheels import WheelSource

SERVICE = "packager"


class PackagerSettings(ServiceSettings):
    # Generated on first run (owner-only); agents verify against its public key.
    signing_key_path: Path = Path.home() / ".sdv" / "keys" / "packager-ed25519.pem"
    # None = the compact VSS 4.0 catalog shipped with the packager; else a VSS JSON export.
    vss_catalog_path: Path | None = None
    # A local wheelhouse (folder of .whl); with wheels_offline, PyPI is never asked.
    wheelhouse: Path | None = None
    wheels_offline: bool = False
    wheel_platform: str = "manylinux2014_x86_64"
    # As root, pip runs as this unprivileged system user (created on first use): it cannot read
    # the signing key. Not root: the packager cannot switch users (see the README).
    build_user: str = BUILD_USER
    # The program that runs pip, before pip's arguments; None = the packager's pip, guarded so it
    # never builds. Runs as build_user, in the build sandbox.
    pip_command: list[str] | None = None

    def wheel_source(self) -> WheelSource:
        return WheelSource(self.wheelhouse, self.wheels_offline, self.wheel_platform,
                           build_user=self.build_user,
                           pip_command=None if self.pip_command is None else tuple(self.pip_command))


def load_settings() -> PackagerSettings:
    env = {
        "signing_key_path": os.environ.get("SDV_PACKAGER_SIGNING_KEY"),
        "vss_catalog_path": os.environ.get("SDV_VSS_CATALOG"),
        "wheelhouse": os.environ.get("SDV_WHEELHOUSE"),
        "wheels_offline": os.environ.get("SDV_WHEELS_OFFLINE"),
        "build_user": os.environ.get("SDV_PACKAGER_BUILD_USER"),
        "pip_command": shlex.split(os.environ.get("SDV_PACKAGER_PIP_COMMAND", "")) or None,
    }
    if data_dir := os.environ.get("SDV_DATA_DIR"):
        default_key = Path(data_dir) / "keys" / "packager-ed25519.pem"
        env["signing_key_path"] = env["signing_key_path"] or str(default_key)
    return PackagerSettings.from_env(SERVICE, **{k: v for k, v in env.items() if v})
