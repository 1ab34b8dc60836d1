"""An upload is bounded by what it unpacks to, checked while it is unpacked (no servers)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from sdv_packager.build.upload import UploadRefused, unpack_upload

MB = 1024 * 1024


def tar_gz(members: list[tarfile.TarInfo], fill: bytes = b"\0") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(fill * info.size) if info.isfile() else None)
    return raw.getvalue()


def blob(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def written(dest: Path) -> int:
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())


def test_many_small_members_stop_at_the_limit_before_it_is_written(tmp_path: Path) -> None:
    data = tar_gz([blob(f"app/b{i:03}.bin", MB) for i in range(40)])
    assert len(data) < 100_000
    with pytest.raises(UploadRefused, match="unpacks to more than 8 MB"):
        unpack_upload(data, tmp_path, max_bytes=8 * MB)
    assert written(tmp_path) <= 8 * MB


def test_one_huge_member_is_refused_from_its_header_before_any_byte_is_written(tmp_path: Path) -> None:
    with pytest.raises(UploadRefused, match=r"at member 'app/huge\.bin'"):
        unpack_upload(tar_gz([blob("app/huge.bin", 40 * MB)]), tmp_path, max_bytes=8 * MB)
    assert written(tmp_path) == 0


def test_a_huge_pax_header_is_refused_by_the_decompressed_stream_limit(tmp_path: Path) -> None:
    info = blob("app/main.py", 1)
    info.pax_headers = {"comment": "x" * (12 * MB)}  # read into memory by tarfile, not a file
    with pytest.raises(UploadRefused, match="unpacks to more than 4 MB"):
        unpack_upload(tar_gz([info]), tmp_path, max_bytes=MB, max_stream_bytes=4 * MB)


def test_links_and_escaping_members_are_still_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("app/key")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    with pytest.raises(UploadRefused, match="is not a file or directory"):
        unpack_upload(tar_gz([link]), tmp_path)
    with pytest.raises(UploadRefused, match="escapes the app directory"):
        unpack_upload(tar_gz([blob("../outside.py", 1)]), tmp_path)


def test_an_ordinary_app_unpacks_to_its_top_folder(tmp_path: Path) -> None:
    app = unpack_upload(tar_gz([blob("app/main.py", 10), blob("app/sdv-app.toml", 5)], b"#"), tmp_path)
    assert app == tmp_path / "app"
    assert sorted(p.name for p in app.iterdir()) == ["main.py", "sdv-app.toml"]


def test_garbage_is_an_invalid_request_not_an_internal_error(tmp_path: Path) -> None:
    with pytest.raises(UploadRefused, match="not a tar archive"):
        unpack_upload(b"\x1f\x8b" + b"garbage" * 10, tmp_path)
