"""given events / when command / then events — no servers."""

from __future__ import annotations

import pytest

from sdv_events.errors import DomainError
from sdv_events.schemas.packages import PackageInfo, PackagePromoted, PackagePublished, PackageYanked
from sdv_packager.domain.package import PromotePackage, PublishPackage, YankPackage, package_decider


def info(version: str = "1.0.0", digest: str = "a" * 64) -> PackageInfo:
    return PackageInfo(
        name="app", version=version, digest=digest, size=10, object_name=digest,
        manifest_digest="m" * 64, signature="sig", key_id="k", channel="dev", runtime="native",
        entry_point="main.py", python_version="3.11",
    )


def test_publish_new_version() -> None:
    assert package_decider.run([], PublishPackage(info())) == [PackagePublished(info())]


def test_republishing_the_same_content_is_idempotent() -> None:
    assert package_decider.run([PackagePublished(info())], PublishPackage(info())) == []


def test_same_version_with_different_content_is_a_conflict() -> None:
    with pytest.raises(DomainError) as caught:
        package_decider.run([PackagePublished(info())], PublishPackage(info(digest="b" * 64)))
    assert caught.value.code == "conflict"
    assert "new version" in caught.value.message


def test_yank_then_promote_is_refused() -> None:
    history = [PackagePublished(info()), PackageYanked("app", "1.0.0", "a" * 64, "crashes")]
    with pytest.raises(DomainError) as caught:
        package_decider.run(history, PromotePackage("app", "1.0.0", "stable"))
    assert caught.value.code == "yanked"
    assert package_decider.run(history, YankPackage("app", "1.0.0", "again")) == []


def test_promote_records_the_channel_change() -> None:
    events = package_decider.run([PackagePublished(info())], PromotePackage("app", "1.0.0", "beta"))
    assert events == [PackagePromoted("app", "1.0.0", "a" * 64, "dev", "beta")]
    again = package_decider.run([PackagePublished(info()), *events], PromotePackage("app", "1.0.0", "beta"))
    assert again == []


def test_unknown_version_is_not_found() -> None:
    with pytest.raises(DomainError) as caught:
        package_decider.run([], YankPackage("app", "9.9.9", "x"))
    assert caught.value.code == "not_found"
