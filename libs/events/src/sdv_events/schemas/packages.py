"""Package events (stream `package-<name>`, written by the packager) and packager commands."""

from __future__ import annotations

from typing import Literal

import msgspec

from sdv_events.registry import event

Channel = Literal["dev", "beta", "stable"]
Runtime = Literal["native", "docker"]


class Resources(msgspec.Struct, frozen=True):
    memory_mb: int
    cpu: float


class HealthCheck(msgspec.Struct, frozen=True, omit_defaults=True):
    alive_for_s: float = 5.0
    command: list[str] | None = None
    timeout_s: float = 10.0


class Security(msgspec.Struct, frozen=True):
    sandbox: Literal["none", "standard", "strict"] = "standard"
    network: Literal["kuksa-only", "none", "full"] = "kuksa-only"


class PackageInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What every consumer needs to know about one published package version."""

    name: str
    version: str
    digest: str  # sha256 of the artifact, hex; the object store key is `<name>/<digest>`
    size: int
    object_name: str
    manifest_digest: str  # sha256 of the canonical package manifest (what is signed)
    signature: str  # base64 Ed25519 signature over manifest_digest
    key_id: str  # sha256 prefix of the signing public key
    channel: Channel
    runtime: Runtime
    entry_point: str
    python_version: str
    description: str = ""
    vss_reads: list[str] = []
    vss_writes: list[str] = []
    resources: Resources = Resources(256, 0.5)
    hot_swap: bool = False
    health: HealthCheck = HealthCheck()
    security: Security = Security()
    dependencies: list[str] = []
    bundled_wheels: list[str] = []
    # Where the bundled wheels install: `<python>/<arch>` ("3.11/aarch64"; arch "any" when that
    # python's wheels are all pure). Planning excludes a device only when none fits it; empty
    # for packages without wheels (and those published before platforms were recorded).
    platforms: list[str] = []
    resolved: list[str] = []  # `name==version` of every bundled distribution (the lock it was built from)
    vss_version: str = ""  # the VSS release the declared signals were checked against
    mqtt: bool = False  # the app talks to the vehicle's MQTT broker (a Velocitas pubsub interface)


@event("packager.PackagePublished")
class PackagePublished(msgspec.Struct, frozen=True):
    package: PackageInfo


@event("packager.PackageYanked")
class PackageYanked(msgspec.Struct, frozen=True):
    name: str
    version: str
    digest: str
    reason: str


@event("packager.PackagePromoted")
class PackagePromoted(msgspec.Struct, frozen=True):
    name: str
    version: str
    digest: str
    from_channel: Channel
    to_channel: Channel


# --- packager commands and queries (sdv.cmd.packager.<name>) ---------------------------------


class PublishRequest(msgspec.Struct, frozen=True):
    """`publish`: the app directory as a tar.gz already put into the object store `sdv_packages`
    under `upload` (large uploads never travel inside a request)."""

    upload: str
    # The version to publish under when the app's own files name none (an Eclipse Velocitas
    # AppManifest.json has no version field); a version they do name must equal it.
    version: str | None = None


class YankRequest(msgspec.Struct, frozen=True):
    name: str
    version: str
    reason: str


class PromoteRequest(msgspec.Struct, frozen=True):
    name: str
    version: str
    channel: Channel


class GetPackage(msgspec.Struct, frozen=True):
    name: str
    version: str


class ListPackages(msgspec.Struct, frozen=True):
    name: str | None = None
    channel: Channel | None = None
    include_yanked: bool = True


class GetSigningKey(msgspec.Struct, frozen=True):
    pass


class PackageView(msgspec.Struct, frozen=True):
    info: PackageInfo
    channel: Channel
    yanked: bool = False
    yank_reason: str | None = None


class PackageList(msgspec.Struct, frozen=True):
    packages: list[PackageView]


class SigningKey(msgspec.Struct, frozen=True):
    key_id: str
    public_key_b64: str
