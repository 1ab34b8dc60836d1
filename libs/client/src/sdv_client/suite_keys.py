"""The suite's two signing keys, made by `sdv up` before the services start, so that the registry
can hand their public halves to every device it admits (SDV_REGISTRY_PACKAGER_KEYS /
SDV_REGISTRY_ORCHESTRATOR_KEYS; `sdv_events.auth.suite_keys`) from its first credential on.

The files are where the packager and the orchestrator look for them (SDV_PACKAGER_SIGNING_KEY /
SDV_ORCHESTRATOR_SIGNING_KEY, else `<data-dir>/keys/…`); a service that starts with the file
there uses it, and two processes creating one at once end up with the same key
(`sdv_events.key_files`). The public halves are written beside them (`.pub`).

Rotation: keys already listed in SDV_REGISTRY_PACKAGER_KEYS / _ORCHESTRATOR_KEYS stay listed
beside the current ones, so an operator rotating a key lists the old one there until every
device has renewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdv_events.desired_signing import public_key_b64
from sdv_events.key_files import load_or_create_ed25519, write_public_key

PACKAGER_ENV = "SDV_PACKAGER_SIGNING_KEY"
ORCHESTRATOR_ENV = "SDV_ORCHESTRATOR_SIGNING_KEY"
REGISTRY_PACKAGER_KEYS = "SDV_REGISTRY_PACKAGER_KEYS"
REGISTRY_ORCHESTRATOR_KEYS = "SDV_REGISTRY_ORCHESTRATOR_KEYS"


@dataclass(frozen=True)
class SigningKeyFiles:
    packager: Path  # private keys (owner-only); the public halves beside them, `.pub`
    orchestrator: Path

    @property
    def packager_pub(self) -> Path:
        return self.packager.with_suffix(".pub")

    @property
    def orchestrator_pub(self) -> Path:
        return self.orchestrator.with_suffix(".pub")

    @classmethod
    def of(cls, data_dir: Path, env: dict[str, str]) -> SigningKeyFiles:
        return cls(Path(env.get(PACKAGER_ENV) or data_dir / "keys" / "packager-ed25519.pem"),
                   Path(env.get(ORCHESTRATOR_ENV) or data_dir / "keys" / "orchestrator-ed25519.pem"))

    def ensure(self, env: dict[str, str]) -> dict[str, str]:
        """Make the keys that are missing; the registry's environment naming their public keys."""
        listed = {}
        pairs = ((self.packager, REGISTRY_PACKAGER_KEYS), (self.orchestrator, REGISTRY_ORCHESTRATOR_KEYS))
        for path, name in pairs:
            public = public_key_b64(load_or_create_ed25519(path).public_key())
            write_public_key(path.with_suffix(".pub"), public)
            already = [k.strip() for k in env.get(name, "").split(",") if k.strip()]
            listed[name] = ",".join(dict.fromkeys([public, *already]))
        return listed
