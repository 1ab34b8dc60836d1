"""Configuration of the orchestrator: the shared settings plus its clock and its signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from sdv_events.service import ServiceSettings

SERVICE = "orchestrator"
KEY_FILE = "orchestrator-ed25519.pem"


class OrchestratorSettings(ServiceSettings):
    service: str = SERVICE
    # How often device timeouts and soak times are checked.
    tick_s: float = Field(1.0, validation_alias="SDV_ORCHESTRATOR_TICK_S", gt=0)
    # Clock skew allowed between a device and the orchestrator: a device's fact counts when it
    # happened by its deadline plus this; a device is timed out once every fact published up to
    # its deadline plus this has been handled.
    clock_skew_s: float = Field(5.0, validation_alias="SDV_ORCHESTRATOR_CLOCK_SKEW_S", ge=0)
    # After the bus was unreachable (or at start), no device is timed out for this long: agents
    # reconnect and publish the facts the outage held back.
    reconnect_grace_s: float = Field(10.0, validation_alias="SDV_ORCHESTRATOR_RECONNECT_GRACE_S",
                                     ge=0)
    # The longest a failed batch of devices' facts waits before it is tried again.
    facts_retry_max_s: float = Field(1.0, validation_alias="SDV_ORCHESTRATOR_FACTS_RETRY_MAX_S",
                                     gt=0)
    # Signs every desired-state document (agents pin its public key, `--orchestrator-key`).
    # Generated on first start, owner-only; its public half is written beside it (`.pub`).
    # Never the packager's key: that one signs packages, this one what a device runs.
    # Default: `$SDV_DATA_DIR/keys/orchestrator-ed25519.pem`, else under ~/.sdv/keys.
    signing_key_path: Path = Field(Path.home() / ".sdv" / "keys" / KEY_FILE,
                                   validation_alias="SDV_ORCHESTRATOR_SIGNING_KEY")
    data_dir: Path | None = Field(None, validation_alias="SDV_DATA_DIR")

    @model_validator(mode="after")
    def _key_in_data_dir(self) -> Self:
        if "signing_key_path" not in self.model_fields_set and self.data_dir is not None:
            self.signing_key_path = self.data_dir / "keys" / KEY_FILE
        return self

    @property
    def public_key_path(self) -> Path:
        return self.signing_key_path.with_suffix(".pub")


def load_settings() -> OrchestratorSettings:
    """From the environment; raises `SettingsError` naming the variable of a bad value."""
    return OrchestratorSettings.load()
