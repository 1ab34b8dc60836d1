"""The base image docker-mode apps build on, made locally: nothing can be pulled from a registry.

A Debian bookworm root filesystem with Python 3.11 (the agent's major.minor, which packages are
checked against) is built with `debootstrap --variant=minbase --include=python3,python3-venv`,
trimmed (apt lists and caches, man pages, locales, docs but their copyright files), packed as a
tarball and `docker import`ed. The tarball is cached under `$SDV_CACHE_DIR` (else ~/.cache/sdv),
named by a hash of its recipe, so later runs only import it. Delete the file to get fresh
packages. A lock file keeps two processes on one machine from building it at the same time.

    python -m sdv_events.servers.python_base_image unix:///path/docker.sock   # build + import
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sdv_events.errors import SdvError

if TYPE_CHECKING:
    import docker

DEFAULT_TAG = "sdv/python:3.11"
RECIPE_LABEL = "org.sdv.base.recipe"
TRIM_VERSION = 1  # bump when the trimming below changes: it is part of the cache key


class BaseImageError(SdvError):
    """The base image could not be built or imported; `reason` says what failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RootfsRecipe:
    suite: str = "bookworm"
    variant: str = "minbase"
    include: tuple[str, ...] = ("python3", "python3-venv")
    python: str = "3.11"

    @property
    def key(self) -> str:
        text = f"{self.suite}|{self.variant}|{','.join(self.include)}|{self.python}|trim{TRIM_VERSION}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def tarball_name(self) -> str:
        return f"rootfs-{self.suite}-python{self.python}-{self.key}.tar.gz"


BOOKWORM_PYTHON = RootfsRecipe()


@dataclass(frozen=True)
class BaseImage:
    tag: str
    image_id: str
    source: Literal["present", "cache", "built"]  # already in the engine, imported, built first
    seconds: float


def cache_dir() -> Path:
    root = os.environ.get("SDV_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "sdv"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _debootstrap(recipe: RootfsRecipe, target: Path, mirror: str, timeout_s: float) -> None:
    binary = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    if binary is None:
        raise BaseImageError("debootstrap is not installed (run deploy/docker-engine-setup.sh)")
    if os.geteuid() != 0:
        raise BaseImageError("debootstrap needs root")
    argv = [binary, f"--variant={recipe.variant}", f"--include={','.join(recipe.include)}",
            recipe.suite, str(target), mirror]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise BaseImageError(f"debootstrap from {mirror} took longer than {timeout_s:.0f}s") from None
    if done.returncode != 0:
        detail = (target / "debootstrap" / "debootstrap.log")
        log = detail.read_text(errors="replace") if detail.exists() else done.stdout + done.stderr
        raise BaseImageError(f"debootstrap {recipe.suite} from {mirror} failed ({done.returncode}):\n"
                             f"{_tail(log)}")


def _trim(root: Path) -> None:
    """What an image needs no copy of: apt's package cache and lists, man pages, locales, and the
    docs (their copyright files stay)."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "usr/share/man/*", "usr/share/locale/*", "var/log/*.log"):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != "lock":
                path.unlink()
    for path in (root / "usr/share/doc").rglob("*"):
        if (path.is_file() or path.is_symlink()) and path.name != "copyright":
            path.unlink()


def rootfs_tarball(recipe: RootfsRecipe = BOOKWORM_PYTHON, *, cache: Path | None = None,
                   mirror: str | None = None, timeout_s: float = 900.0) -> tuple[Path, bool]:
    """The cached root filesystem tarball of `recipe`, built first if missing; (path, built)."""
    cache = cache or cache_dir()
    final = cache / recipe.tarball_name
    if final.is_file():
        return final, False
    mirror = mirror or os.environ.get("SDV_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    with _locked(cache / f"{recipe.tarball_name}.lock"):
        if final.is_file():  # another process built it while this one waited
            return final, False
        work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
        try:
            root = work / "root"
            _debootstrap(recipe, root, mirror, timeout_s)
            _trim(root)
            partial = work / "rootfs.tar.gz"
            done = subprocess.run(
                ["tar", "--numeric-owner", "--sort=name", "-C", str(root), "-czf", str(partial), "."],
                capture_output=True, text=True, check=False,
            )
            if done.returncode != 0:
                raise BaseImageError(f"packing the root filesystem failed: {_tail(done.stderr)}")
            partial.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final, True


def ensure_python_image(client: docker.DockerClient, tag: str = DEFAULT_TAG, *,
                        recipe: RootfsRecipe = BOOKWORM_PYTHON, cache: Path | None = None) -> BaseImage:
    """Make sure the engine behind `client` has the Python base image `tag` built from `recipe`."""
    import docker

    started = time.monotonic()
    with contextlib.suppress(docker.errors.ImageNotFound):
        image = client.images.get(tag)
        if image.labels.get(RECIPE_LABEL) == recipe.key:
            return BaseImage(tag, image.id, "present", time.monotonic() - started)
    tarball, built = rootfs_tarball(recipe, cache=cache)
    repository, _, version = tag.rpartition(":")
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        f"LABEL {RECIPE_LABEL}={recipe.key}",
        'CMD ["python3"]',
    ]
    try:
        client.api.import_image(src=str(tarball), repository=repository, tag=version, changes=changes)
        image = client.images.get(tag)
    except docker.errors.DockerException as exc:
        raise BaseImageError(f"docker import of {tarball} as {tag} failed: {exc}") from None
    return BaseImage(tag, image.id, "built" if built else "cache", time.monotonic() - started)


def main(argv: list[str]) -> int:
    import docker

    if len(argv) != 1:
        print("usage: python -m sdv_events.servers.python_base_image DOCKER_HOST_URL", file=sys.stderr)
        return 2
    try:
        result = ensure_python_image(docker.DockerClient(base_url=argv[0]))
    except BaseImageError as err:
        print(f"base image: {err.reason}", file=sys.stderr)
        return 1
    print(f"{result.tag} {result.image_id} ({result.source}, {result.seconds:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
