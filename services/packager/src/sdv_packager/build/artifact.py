"""Reproducible tar.gz: sorted members, fixed mtime/owner/mode, no gzip timestamp or name.

The same members give the same bytes (and sha256) on any machine, on any day.
"""

from __future__ import annotations

import gzip
import io
import tarfile

# 1980-01-01, the zip epoch: tools that dislike mtime 0 accept it.
FIXED_MTIME = 315_532_800


def build_tar_gz(members: dict[str, bytes], executables: frozenset[str] = frozenset()) -> bytes:
    """`members` in the order given first for `package.json`-style leaders, then sorted."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in _ordered(members):
            data = members[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o755 if name in executables else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _ordered(members: dict[str, bytes]) -> list[str]:
    leader = [n for n in members if n == "package.json"]
    return leader + sorted(n for n in members if n != "package.json")
