"""The package aggregate (stream `package-<name>`): publish, yank, promote.

A name+version is immutable: republishing the same digest is a no-op (idempotent), a different
digest is refused. Yanked versions stay in history but cannot be promoted or rolled out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import msgspec

from sdv_events.decider import Decider
from sdv_events.errors import DomainError
from sdv_events.schemas.packages import (
    Channel,
    PackageInfo,
    PackagePromoted,
    PackagePublished,
    PackageYanked,
)

PackageEvent = PackagePublished | PackageYanked | PackagePromoted


class PublishPackage(msgspec.Struct, frozen=True):
    package: PackageInfo


class YankPackage(msgspec.Struct, frozen=True):
    name: str
    version: str
    reason: str


class PromotePackage(msgspec.Struct, frozen=True):
    name: str
    version: str
    to_channel: Channel


PackageCommand = PublishPackage | YankPackage | PromotePackage


@dataclass(frozen=True)
class VersionState:
    info: PackageInfo
    channel: Channel
    yanked: bool = False
    yank_reason: str | None = None

    @property
    def digest(self) -> str:
        return self.info.digest


@dataclass(frozen=True)
class PackageState:
    versions: dict[str, VersionState] = field(default_factory=dict)


def _known(state: PackageState, name: str, version: str) -> VersionState:
    current = state.versions.get(version)
    if current is None:
        raise DomainError(f"{name} {version} is not published", code="not_found")
    return current


def decide(command: PackageCommand, state: PackageState) -> Sequence[PackageEvent]:
    match command:
        case PublishPackage(package=info):
            existing = state.versions.get(info.version)
            if existing is None:
                return [PackagePublished(info)]
            if existing.digest == info.digest:
                return []
            raise DomainError(
                f"{info.name} {info.version} is already published with digest "
                f"{existing.digest[:12]}…; different content needs a new version",
                code="conflict",
            )
        case YankPackage(name=name, version=version, reason=reason):
            current = _known(state, name, version)
            return [] if current.yanked else [PackageYanked(name, version, current.digest, reason)]
        case PromotePackage(name=name, version=version, to_channel=channel):
            current = _known(state, name, version)
            if current.yanked:
                raise DomainError(f"{name} {version} is yanked and cannot be promoted", code="yanked")
            if current.channel == channel:
                return []
            return [PackagePromoted(name, version, current.digest, current.channel, channel)]
    raise DomainError(f"unknown command {type(command).__name__}", code="invalid_request")


def evolve(state: PackageState, event: PackageEvent) -> PackageState:
    versions = dict(state.versions)
    match event:
        case PackagePublished(package=info):
            versions[info.version] = VersionState(info, info.channel)
        case PackageYanked(version=version, reason=reason):
            versions[version] = replace(versions[version], yanked=True, yank_reason=reason)
        case PackagePromoted(version=version, to_channel=channel):
            versions[version] = replace(versions[version], channel=channel)
    return PackageState(versions)


package_decider: Decider[PackageCommand, PackageEvent, PackageState] = Decider(
    PackageState(), decide, evolve
)
