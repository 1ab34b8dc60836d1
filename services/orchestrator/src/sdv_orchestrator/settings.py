"""Configuration of the orchestrator: the shared settings plus its clock and its signing key."""

from __future__ import annotations

import os
from pathlib import Path

from sdv_events.service import ServiceSettings

SERVICE = "orchestrator"
KEY_FILE = "orchestrator-ed25519.pem"


class OrchestratorSettings(ServiceSettings):
    tick_s: float = 1.0  # how often device timeouts and soak times are checked
    # Signs every desired-state document (agents pin its public key, `--orchestrator-key`).
    # Generated on first start, owner-only; its public half is written beside it (`.pub`).
    # Never the packager's key: that one signs packages, this one what a device runs.
    signing_key_path: Path = Path.home() / ".sdv" / "keys" / KEY_FILE

    @property
    def public_key_path(self) -> Path:
        return self.signing_key_path.with_suffix(".pub")


def load_settings() -> OrchestratorSettings:
    """`SDV_ORCHESTRATOR_SIGNING_KEY`, else `$SDV_DATA_DIR/keys/orchestrator-ed25519.pem`."""
    key = os.environ.get("SDV_ORCHESTRATOR_SIGNING_KEY")
    if not key and (data_dir := os.environ.get("SDV_DATA_DIR")):
        key = str(Path(data_dir) / "keys" / KEY_FILE)
    return OrchestratorSettings.from_env(SERVICE, **({"signing_key_path": key} if key else {}))
