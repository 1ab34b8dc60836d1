"""A separate process for work the packager does not trust (pip): it cannot read the signing key.

As root, the process runs as an unprivileged system user (`sdv-build`, created on first use, like
the embedded PostgreSQL's user): the key file is 0600 and owned by the packager's user, and the
packager's memory is another user's. In every mode it gets a scrubbed environment (no `SDV_*`, no
credentials paths, no `PIP_*`/`PYTHON*` from the packager), its own HOME, TMPDIR and working
directory, and no inherited file descriptors. When the packager is not root it cannot switch users:
then the key is protected by no foreign code running at all (direct references are refused and
nothing is built, see `pip_guard`), and this sandbox is only the clean environment.

What the process leaves in `out/` is read back without following links and only if it is a regular
file the sandbox user owns, so it cannot hand the packager the key by a symlink or hard link.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

BUILD_USER = "sdv-build"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_create_lock = threading.Lock()


class BuildEnvironmentError(RuntimeError):
    """The packager cannot set up the isolated build process (a deployment problem)."""


class OutputRefused(ValueError):
    """The sandboxed process left something that is not one of its own regular files."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def build_account(name: str = BUILD_USER) -> Account | None:
    """The user untrusted work runs as; None when the packager is not root (it cannot switch)."""
    if os.geteuid() != 0:
        return None
    with _create_lock:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            _create_system_user(name)
            entry = pwd.getpwnam(name)
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise BuildEnvironmentError(f"build user {name!r} is root or in group root; use another")
    return Account(name, entry.pw_uid, entry.pw_gid)


def _create_system_user(name: str) -> None:
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise BuildEnvironmentError(f"cannot create build user {name!r}: {result.stderr.strip()}")


class Sandbox:
    """A private tree (`home`, `tmp`, `work`, `out`, `in`) and `run`: a command inside it as the
    account. `in/` is the packager's (read-only for the account), the rest the account's."""

    def __init__(self, account: Account | None) -> None:
        self.account = account
        self.root = Path(tempfile.mkdtemp(prefix="sdv-build-"))
        for name in ("home", "tmp", "work", "out"):
            (self.root / name).mkdir(mode=0o700)
            self._own(self.root / name)
        (self.root / "in").mkdir(mode=0o755)
        # The root stays the packager's: the account can enter it, not rename what is inside.
        self.root.chmod(0o700 if account is None else 0o711)

    def _own(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.uid, self.account.gid)

    @property
    def inputs(self) -> Path:
        return self.root / "in"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def env(self) -> dict[str, str]:
        return {
            "PATH": SAFE_PATH, "HOME": str(self.root / "home"), "TMPDIR": str(self.root / "tmp"),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
        }

    def put_input(self, name: str, data: bytes) -> Path:
        """A file the sandboxed process may read but not change."""
        path = self.inputs / name
        path.write_bytes(data)
        path.chmod(0o644)
        return path

    def link_input(self, source: Path, name: str) -> Path:
        """`source` readable inside the sandbox: a hard link when it is world-readable, else a copy."""
        path = self.inputs / name
        try:
            if not source.stat().st_mode & stat.S_IROTH:
                raise OSError("not world-readable")
            os.link(source, path)
        except OSError:
            shutil.copyfile(source, path)
            path.chmod(0o644)
        return path

    def run(self, argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        user = None if self.account is None else self.account.uid
        group = None if self.account is None else self.account.gid
        return subprocess.run(
            argv, cwd=self.root / "work", env=self.env(), user=user, group=group,
            extra_groups=[] if self.account is not None else None, umask=0o077,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s,
            close_fds=True, check=False,
        )

    def read_outputs(self, suffix: str, max_bytes: int) -> dict[str, bytes]:
        """Name → content of every `out/*<suffix>`; anything else in `out/` is refused."""
        found: dict[str, bytes] = {}
        total = 0
        for entry in sorted(os.scandir(self.out), key=lambda e: e.name):
            if not entry.name.endswith(suffix):
                raise OutputRefused(f"{entry.name} is not a {suffix} file")
            data = self._read_own_file(Path(entry.path))
            total += len(data)
            if total > max_bytes:
                raise OutputRefused(f"outputs exceed {max_bytes // (1024 * 1024)} MB")
            found[entry.name] = data
        return found

    def _read_own_file(self, path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise OutputRefused(f"{path.name} cannot be read as a plain file: {exc}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            expected_uid = os.geteuid() if self.account is None else self.account.uid
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != expected_uid:
                raise OutputRefused(f"{path.name} is not a regular file written by the build")
            return handle.read()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
