"""given events / when command / then events (or the refusal) — no servers."""

from __future__ import annotations

from sdv_events.decider_testing import Refusal
from sdv_events.decider_testing import then as decided
from sdv_events.schemas.packages import PackageInfo, PackagePromoted, PackagePublished, PackageYanked
from sdv_packager.domain.package import (
    PackageCommand,
    PackageEvent,
    PromotePackage,
    PublishPackage,
    YankPackage,
    package_decider,
)


def info(version: str = "1.0.0", digest: str = "a" * 64) -> PackageInfo:
    return PackageInfo(
        name="app", version=version, digest=digest, size=10, object_name=digest,
        manifest_digest="m" * 64, signature="sig", key_id="k", channel="dev", runtime="native",
        entry_point="main.py", python_version="3.11",
    )


def then(given: list[PackageEvent], when: PackageCommand) -> list[PackageEvent] | Refusal:
    return decided(package_decider, given=given, when=when)


def test_publish_new_version() -> None:
    assert then([], PublishPackage(info())) == [PackagePublished(info())]


def test_republishing_the_same_content_is_idempotent() -> None:
    assert then([PackagePublished(info())], PublishPackage(info())) == []


def test_same_version_with_different_content_is_a_conflict() -> None:
    refusal = then([PackagePublished(info())], PublishPackage(info(digest="b" * 64)))
    assert isinstance(refusal, Refusal)
    assert refusal.code == "conflict"
    assert "new version" in refusal.message


def test_yank_then_promote_is_refused() -> None:
    history = [PackagePublished(info()), PackageYanked("app", "1.0.0", "a" * 64, "crashes")]
    assert then(history, PromotePackage("app", "1.0.0", "stable")) == Refusal(
        "yanked", "app 1.0.0 is yanked and cannot be promoted")
    assert then(history, YankPackage("app", "1.0.0", "again")) == []


def test_promote_records_the_channel_change() -> None:
    events = then([PackagePublished(info())], PromotePackage("app", "1.0.0", "beta"))
    assert events == [PackagePromoted("app", "1.0.0", "a" * 64, "dev", "beta")]
    assert then([PackagePublished(info()), *events], PromotePackage("app", "1.0.0", "beta")) == []


def test_unknown_version_is_not_found() -> None:
    assert then([], YankPackage("app", "9.9.9", "x")) == Refusal("not_found", "app 9.9.9 is not published")
