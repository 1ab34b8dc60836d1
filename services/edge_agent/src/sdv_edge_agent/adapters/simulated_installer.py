"""SIMULATED install, for `sdv-agent --simulate N`: the artifact is downloaded and verified by the
real code, then only the installed-version marker is written — no files, no venv, no pip.

Each simulated device downloads the artifact itself, over its own connection (a scale test
should load the object store the way a fleet does). Verification is shared: N devices of one
process would otherwise check the same bytes N times. `VerifiedArtifacts` remembers which
(digest, signature, packager key, name, version) passed the full check (`Installer.verify`:
digest, Ed25519 signature, every member). A device's bytes reuse that result only if their own
sha256 equals the digest — the same bytes — so a tampered or truncated download is still refused,
and a forged signature is another key, checked in full.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from sdv_edge_agent.adapters.packages import COMPLETE_MARKER, InstalledVersion, Installer, write_signed
from sdv_events.schemas.packages import PackageInfo

VerifiedKey = tuple[str, str]  # (sha256 of the whole package description, packager keys trusted)


class VerifiedArtifacts:
    """What passed verification in this process, shared by all its simulated devices."""

    def __init__(self) -> None:
        self._passed: dict[VerifiedKey, bytes] = {}  # → the signed manifest that passed
        self.full_checks = 0
        self.reused = 0

    def key(self, package: PackageInfo, public_key_b64: str) -> VerifiedKey:
        # Every field, not just digest and signature: the description must match what was signed.
        return (hashlib.sha256(msgspec.json.encode(package)).hexdigest(), public_key_b64)

    def passed(self, package: PackageInfo, public_key_b64: str, artifact: bytes) -> bytes | None:
        """The signed manifest these bytes were verified with, if they were."""
        raw = self._passed.get(self.key(package, public_key_b64))
        if raw is None or hashlib.sha256(artifact).hexdigest() != package.digest:
            return None
        return raw

    def remember(self, package: PackageInfo, public_key_b64: str, raw_manifest: bytes) -> None:
        self._passed[self.key(package, public_key_b64)] = raw_manifest


class SimulatedInstaller(Installer):
    """The `Installer` interface, so the supervisor is unchanged; `install` verifies and marks."""

    def __init__(self, apps_dir: Path, public_keys: str | Sequence[str], verified: VerifiedArtifacts) -> None:
        super().__init__(apps_dir, public_keys, python=sys.executable)  # no venv is made: no probe
        self.verified = verified

    @property
    def trusted(self) -> str:
        """The keys trusted, as one string: a result is reused only under the same keys."""
        return ",".join(sorted(self.public_keys))

    async def install(self, package: PackageInfo, artifact: bytes) -> InstalledVersion:
        raw = self.verified.passed(package, self.trusted, artifact)
        if raw is not None:
            self.verified.reused += 1
        else:
            _, raw, _ = self.verify_raw(package, artifact)  # raises InstallError("verify", …) as on a device
            self.verified.full_checks += 1
            self.verified.remember(package, self.trusted, raw)
        done = self.installed(package)
        if done is not None:
            return done
        root = self.location(package)
        root.mkdir(parents=True, exist_ok=True)
        write_signed(root, raw, package.signature)  # checked before every start, as on a device
        tmp = root / f"{COMPLETE_MARKER}.tmp"
        tmp.write_text(package.digest)
        tmp.replace(root / COMPLETE_MARKER)
        return InstalledVersion(package, root)
