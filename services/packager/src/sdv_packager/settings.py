"""Configuration of the packager: the shared settings plus where the signing key, the VSS
catalog and dependency wheels come from."""

from __future__ import annotations

import os
from pathlib import Path

from sdv_events.service import ServiceSettings
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

    def wheel_source(self) -> WheelSource:
        return WheelSource(self.wheelhouse, self.wheels_offline, self.wheel_platform)


def load_settings() -> PackagerSettings:
    env = {
        "signing_key_path": os.environ.get("SDV_PACKAGER_SIGNING_KEY"),
        "vss_catalog_path": os.environ.get("SDV_VSS_CATALOG"),
        "wheelhouse": os.environ.get("SDV_WHEELHOUSE"),
        "wheels_offline": os.environ.get("SDV_WHEELS_OFFLINE"),
    }
    if data_dir := os.environ.get("SDV_DATA_DIR"):
        default_key = Path(data_dir) / "keys" / "packager-ed25519.pem"
        env["signing_key_path"] = env["signing_key_path"] or str(default_key)
    return PackagerSettings.from_env(SERVICE, **{k: v for k, v in env.items() if v})
