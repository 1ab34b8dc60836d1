"""What the sandboxed pip leaves behind is read back only as its own plain files (no servers)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdv_packager.build.sandbox import OutputRefused, Sandbox, build_account


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with Sandbox(build_account()) as sandbox:
        yield sandbox


def test_a_symlink_to_the_signing_key_is_not_read(box: Sandbox, tmp_path: Path) -> None:
    key = tmp_path / "packager-ed25519.pem"
    key.write_text("PRIVATE")
    (box.out / "evil-1.0-py3-none-any.whl").symlink_to(key)
    with pytest.raises(OutputRefused, match="cannot be read as a plain file"):
        box.read_outputs(".whl", 1024)


def test_a_hard_link_or_a_file_the_build_did_not_write_is_not_read(box: Sandbox, tmp_path: Path) -> None:
    key = tmp_path / "packager-ed25519.pem"
    key.write_text("PRIVATE")
    os.link(key, box.out / "evil-1.0-py3-none-any.whl")
    with pytest.raises(OutputRefused, match="not a regular file written by the build"):
        box.read_outputs(".whl", 1024)


def test_anything_but_wheels_is_refused(box: Sandbox) -> None:
    (box.out / "evil-1.0.tar.gz").write_bytes(b"sdist")
    with pytest.raises(OutputRefused, match=r"is not a \.whl file"):
        box.read_outputs(".whl", 1024)


def test_the_sandbox_environment_carries_nothing_of_the_packager(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDV_NATS_CREDS", "/secret/service.creds")
    monkeypatch.setenv("PIP_INDEX_URL", "https://evil.example/simple")
    env = box.env()
    assert not any(k.startswith(("SDV_", "PIP_")) for k in env)
    assert env["HOME"].startswith(str(box.root))
