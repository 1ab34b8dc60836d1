"""Which dependency lines an app may declare (pure: no pip, no servers)."""

from __future__ import annotations

import pytest

from sdv_packager.domain.dependencies import (
    Dependency,
    DependencyRefused,
    parse_dependencies,
    parse_dependency,
)

SHA = "sha256:" + "ab" * 32


@pytest.mark.parametrize("line", [
    "requests>=2", "requests[socks]>=2,<3", 'tomli>=2 ; python_version < "3.11"', "kuksa-client==0.4.3",
])
def test_named_requirements_are_accepted_as_written(line: str) -> None:
    assert parse_dependency(line) == Dependency(line)


@pytest.mark.parametrize("line", [
    "evilpkg @ file:///tmp/evil", "evilpkg @ https://evil.example/e-1.0.tar.gz",
    "evilpkg @ git+https://evil.example/e.git", "evilpkg@file:///tmp/evil.whl",
])
def test_direct_references_are_refused_naming_the_line(line: str) -> None:
    with pytest.raises(DependencyRefused, match="is a direct reference") as refused:
        parse_dependency(line)
    assert repr(line) in str(refused.value)


@pytest.mark.parametrize("line", [
    "-e .", "-r other.txt", "--requirement other.txt", "--index-url=https://evil.example/simple",
    "--extra-index-url https://evil.example", "--find-links /tmp", "--trusted-host evil.example",
    "-c constraints.txt",
])
def test_pip_option_lines_are_refused(line: str) -> None:
    with pytest.raises(DependencyRefused, match="is a pip option line"):
        parse_dependency(line)


@pytest.mark.parametrize("line", [
    "./vendored/lib", "../lib", "/tmp/evil-1.0.whl", "~/evil", "https://evil.example/e.whl",
    "git+https://evil.example/e.git", "file:///tmp/evil",
])
def test_paths_and_urls_are_refused(line: str) -> None:
    with pytest.raises(DependencyRefused, match="is a path or URL"):
        parse_dependency(line)


def test_options_after_a_name_are_refused() -> None:
    with pytest.raises(DependencyRefused, match="not PEP 508"):
        parse_dependency("requests --index-url https://evil.example/simple")


def test_hash_pins_are_kept_for_pip_and_left_out_of_the_requirement() -> None:
    dep = parse_dependency(f"requests==2.32.3 --hash={SHA}")
    assert dep == Dependency("requests==2.32.3", (SHA,))
    assert dep.requirements_line() == f"requests==2.32.3 --hash={SHA}"


def test_weak_or_malformed_hashes_are_refused() -> None:
    with pytest.raises(DependencyRefused, match="not a sha256/sha384/sha512 hash"):
        parse_dependency("requests==2.32.3 --hash=md5:0123")


def test_every_refused_line_is_reported_with_its_index() -> None:
    with pytest.raises(DependencyRefused) as refused:
        parse_dependencies(["requests>=2", "evil @ file:///x", "-e ."])
    message = str(refused.value)
    assert "dependency [1] 'evil @ file:///x'" in message
    assert "dependency [2] '-e .'" in message
    assert "[0]" not in message
