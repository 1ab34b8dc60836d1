"""Each manifest rule gives a clear error naming the field."""

from __future__ import annotations

import pytest

from sdv_packager.domain.manifest import ManifestError, parse_cpu, parse_manifest, parse_memory_mb

BASE = '[app]\nname = "ok-app"\nversion = "1.2.3"\n'


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    return {p.path: p.message for p in caught.value.problems}


def test_minimal_manifest_gets_production_defaults() -> None:
    manifest = parse_manifest(BASE)
    assert manifest.app.runtime == "native"
    assert manifest.resources.memory == 256
    assert manifest.security.network == "kuksa-only"


@pytest.mark.parametrize("name", ["Speed", "9lives", "a", "with_underscore", "double--hyphen", "end-"])
def test_bad_names_are_refused(name: str) -> None:
    found = problems(BASE.replace('"ok-app"', f'"{name}"'))
    assert "not a valid app name" in found["app.name"]


@pytest.mark.parametrize("version", ["1.0", "01.0.0", "1.0.0.0", "v1.0.0"])
def test_bad_versions_are_refused(version: str) -> None:
    assert "semantic version" in problems(BASE.replace("1.2.3", version))["app.version"]


def test_prerelease_versions_are_allowed() -> None:
    assert parse_manifest(BASE.replace("1.2.3", "1.2.3-rc.1+build.5")).app.version == "1.2.3-rc.1+build.5"


def test_resource_floors_and_units() -> None:
    found = problems(BASE + '[resources]\nmemory = "64MB"\ncpu = "50m"\n')
    assert "at least 128 MB" in found["resources.memory"]
    assert "at least 0.1" in found["resources.cpu"]
    assert parse_memory_mb("1GB") == 1000
    assert parse_memory_mb("512Mi") == 536
    assert parse_memory_mb(300) == 300
    assert parse_cpu("500m") == 0.5
    assert parse_cpu("0.25") == 0.25


def test_unparseable_sizes_say_what_is_expected() -> None:
    assert "memory size like" in problems(BASE + '[resources]\nmemory = "lots"\n')["resources.memory"]


def test_dependencies_must_be_pep508() -> None:
    found = problems(BASE.replace("\n", '\ndependencies = ["requests>=2", "not a ==== spec"]\n', 1))
    assert "not PEP 508" in found["app.dependencies"]


def test_entry_point_must_stay_inside_the_app() -> None:
    assert "relative path" in problems(BASE + 'entry_point = "../evil.py"\n')["app.entry_point"]


def test_unknown_fields_and_enum_values_are_named() -> None:
    found = problems(BASE + 'runtime = "wasm"\ncolour = "red"\n')
    assert "app.runtime" in found
    assert found["app.colour"] == "unknown field (check the spelling)"


def test_toml_syntax_error_is_reported() -> None:
    assert "(toml)" in problems("[app\nname=")
