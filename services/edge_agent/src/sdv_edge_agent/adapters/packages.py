"""Getting an app version onto the device: verify the downloaded artifact (`downloads.py`), install.

Nothing of a package is written to disk before the whole artifact verified (digest, Ed25519
signature with the packager key this agent trusts, every member's sha256; inflating it bounded,
see `artifact.py`): a tampered package never gets a file on the device, let alone a process.
The signed manifest and its signature are kept beside the installed version (`.signed`), and
every start checks the package description it is given against them again (`signed_problem`):
a desired document that reuses an installed digest cannot change how that code runs.
An install goes to a temporary directory and is renamed into place once complete, so a crash
mid-install leaves no half-installed version.
Each native version gets its own venv; bundled wheels install offline (`--no-index --find-links`).
A docker version gets no venv here: its image (built by the docker runtime from the package's
Dockerfile) holds one.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog

from sdv_edge_agent.adapters.artifact import DEFAULT_MAX_UNPACKED, check_recorded, verify_bounded
from sdv_edge_agent.domain.admission import valid_app_name
from sdv_edge_agent.domain.platforms import carried, fitting_target, machine_arch
from sdv_events.errors import SdvError
from sdv_events.package_format import PackageManifest, PackageVerificationError, safe_member_path
from sdv_events.schemas.packages import HealthCheck, PackageInfo, Resources, Security

log = structlog.get_logger("sdv.agent.packages")
COMPLETE_MARKER = ".installed"
SIGNED_RECORD = ".signed"  # {"manifest": the signed package.json, "signature": base64}


class SignedRecord(msgspec.Struct, frozen=True):
    manifest: str
    signature: str


class InstallError(SdvError):
    """A version could not be put on the device; `stage` says where (download|verify|install)."""

    def __init__(self, stage: str, message: str, *, transient: bool = False) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message
        # Transient (network down, timeout): retry later. Otherwise the version is refused.
        self.transient = transient


@dataclass(frozen=True)
class InstalledVersion:
    package: PackageInfo
    root: Path

    @property
    def app_dir(self) -> Path:
        return self.root / "app"

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"


def unsigned_differences(manifest: PackageManifest, package: PackageInfo) -> list[str]:
    """Every field of the (unsigned) desired-state package description that decides how the app
    runs must equal the signed manifest: otherwise whoever can write a desired document could
    change the entry point, the sandbox or the health command of signed code."""
    health = HealthCheck(**manifest.health) if manifest.health else HealthCheck()
    signed = {
        "runtime": manifest.runtime, "entry_point": manifest.entry_point,
        "python_version": manifest.python_version, "hot_swap": manifest.hot_swap,
        "dependencies": manifest.dependencies,
        "resources": Resources(int(manifest.resources.get("memory_mb", 0)),
                               float(manifest.resources.get("cpu", 0))),
        "health": health, "security": _signed_security(manifest.security),
    }
    return [f"{field}: {getattr(package, field)!r} is not the signed {value!r}"
            for field, value in signed.items() if getattr(package, field) != value]


def _signed_security(raw: dict[str, str]) -> Security | dict[str, str]:
    """The manifest's security settings; settings this agent does not know stay as signed (and
    so differ from any package description)."""
    try:
        return msgspec.convert(raw, Security)
    except msgspec.ValidationError:
        return raw


def _description_problem(manifest: PackageManifest, package: PackageInfo) -> str | None:
    if (manifest.name, manifest.version) != (package.name, package.version):
        return (f"artifact holds {manifest.name} {manifest.version}, "
                f"not {package.name} {package.version}")
    differs = unsigned_differences(manifest, package)
    if differs:
        return "the package description does not match what was signed: " + "; ".join(differs)
    return None


def _lay_out(root: Path, members: dict[str, bytes]) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    for rel, content in members.items():  # paths were checked safe by read_artifact
        target = staging / "app" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return staging


def _read_only_for_apps(staging: Path) -> None:
    """Installed files belong to the agent: readable (and executable where they were) by the app's
    own user, writable by nobody else. A sandboxed app cannot change its own code."""
    for path in (staging, *staging.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(0o755 if path.is_dir() or mode & 0o100 else 0o644)


def write_signed(root: Path, raw_manifest: bytes, signature: str) -> None:
    record = SignedRecord(raw_manifest.decode(), signature)
    tmp = root / f"{SIGNED_RECORD}.tmp"
    tmp.write_bytes(msgspec.json.encode(record))
    tmp.chmod(0o644)
    tmp.replace(root / SIGNED_RECORD)


def _commit(staging: Path, root: Path, digest: str, raw_manifest: bytes, signature: str) -> None:
    _read_only_for_apps(staging)
    write_signed(staging, raw_manifest, signature)
    (staging / COMPLETE_MARKER).write_text(digest)
    if root.exists():
        shutil.rmtree(root)  # an earlier, incomplete attempt
    staging.rename(root)


def _python_path_file(venv: Path, python_version: str, folders: list[str]) -> None:
    """The app's own import folders (a Velocitas app's generated `vehicle` model) as a .pth file
    of the venv: lines relative to site-packages, so they survive the staging directory's
    rename into place."""
    site = venv / "lib" / f"python{python_version}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    lines = [os.path.relpath(venv.parent / "app" / folder, site) for folder in folders
             if safe_member_path(folder)]
    (site / "sdv-app-path.pth").write_text("".join(f"{line}\n" for line in lines))


def _others_can_run(path: str) -> bool:
    """Every directory on the way is searchable, and the file executable, by any user."""
    target = Path(os.path.realpath(path))
    return all(p.stat().st_mode & 0o001 for p in (target, *target.parents))


def default_app_python() -> str:
    """The interpreter app venvs are made from: the agent's own, unless sandboxed app users could
    not run it (an agent installed under /root, say) and the system has the same major.minor."""
    own = sys.executable
    if os.geteuid() != 0 or _others_can_run(own):
        return own
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}",
                          path="/usr/local/bin:/usr/bin:/bin")
    return system if system and _others_can_run(system) else own


def python_version_of(python: str) -> str:
    """The full version of an interpreter, e.g. 3.11.2."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return platform.python_version()
    out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


class Installer:
    def __init__(self, apps_dir: Path, public_keys: str | Sequence[str], *, python: str | None = None,
                 pip_timeout_s: float = 300.0, max_unpacked: int = DEFAULT_MAX_UNPACKED) -> None:
        self.apps_dir = apps_dir
        self.max_unpacked = max_unpacked
        # The packager's public keys whose signatures count (two during a rotation); `trust`
        # replaces them when the agent learns new ones from its credentials.
        self.public_keys = (public_keys,) if isinstance(public_keys, str) else tuple(public_keys)
        self.pip_timeout_s = pip_timeout_s
        self.python = python or default_app_python()
        self.python_full_version = python_version_of(self.python)
        # What each package's `python_version` must equal: its wheels were chosen for it.
        self.python_version = ".".join(self.python_full_version.split(".")[:2])

    def trust(self, public_keys: Sequence[str]) -> None:
        self.public_keys = tuple(public_keys)

    def app_root(self, name: str) -> Path:
        if not valid_app_name(name):  # admission refuses these first; a path is never built of one
            raise InstallError("verify", f"{name[:80]!r} is not a valid app name")
        return self.apps_dir / name

    def location(self, package: PackageInfo) -> Path:
        return self.app_root(package.name) / f"{package.version}-{package.digest[:12]}"

    def installed(self, package: PackageInfo) -> InstalledVersion | None:
        """The version, if completely installed with its signed manifest kept (one installed by an
        agent that kept none counts as not installed: it is downloaded and verified again)."""
        root = self.location(package)
        marker = root / COMPLETE_MARKER
        if (marker.is_file() and marker.read_text().strip() == package.digest
                and (root / SIGNED_RECORD).is_file()):
            return InstalledVersion(package, root)
        return None

    def signed_problem(self, package: PackageInfo) -> str | None:
        """Why this package description may not run the installed version (None: it may): the
        kept manifest must verify with this agent's packager key and equal the description in
        everything that decides how the app runs. Checked before every start."""
        try:
            record = msgspec.json.decode((self.location(package) / SIGNED_RECORD).read_bytes(),
                                         type=SignedRecord)
            manifest = check_recorded(record.manifest.encode(), record.signature, self.public_keys)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError, PackageVerificationError) as exc:
            return f"the installed version's signed manifest does not verify: {exc}"
        return _description_problem(manifest, package)

    def verify(self, package: PackageInfo, artifact: bytes) -> tuple[PackageManifest, dict[str, bytes]]:
        manifest, _raw, members = self.verify_raw(package, artifact)
        return manifest, members

    def verify_raw(self, package: PackageInfo,
                   artifact: bytes) -> tuple[PackageManifest, bytes, dict[str, bytes]]:
        try:
            manifest, raw, members = verify_bounded(
                artifact, digest=package.digest, signature_b64=package.signature,
                public_keys=self.public_keys, max_unpacked=self.max_unpacked,
            )
        except PackageVerificationError as exc:
            raise InstallError("verify", str(exc)) from None
        problem = _description_problem(manifest, package)
        if problem is not None:
            raise InstallError("verify", problem)
        if manifest.entry_point not in members:
            raise InstallError("verify", f"entry point {manifest.entry_point} is not in the artifact")
        return manifest, raw, members

    async def install(self, package: PackageInfo, artifact: bytes) -> InstalledVersion:
        """Verify, then lay out files, and for native apps the venv and wheels. Idempotent per
        digest."""
        manifest, raw, members = await asyncio.to_thread(self.verify_raw, package, artifact)
        done = self.installed(package)
        if done is not None:
            return done
        root = self.location(package)
        marker = root / COMPLETE_MARKER
        if marker.is_file() and marker.read_text().strip() == package.digest:
            # Installed by an agent that kept no signed manifest: keep the files, add the record.
            await asyncio.to_thread(write_signed, root, raw, package.signature)
            return InstalledVersion(package, root)
        staging = await asyncio.to_thread(_lay_out, root, members)
        try:
            if package.runtime != "docker":  # a docker image holds the app's venv
                await self._venv(staging, manifest)
            await asyncio.to_thread(_commit, staging, root, package.digest, raw, package.signature)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return InstalledVersion(package, root)

    async def _venv(self, staging: Path, manifest: PackageManifest) -> None:
        venv = staging / "venv"
        await self._run("install", [self.python, "-m", "venv", "--without-pip", str(venv)])
        if manifest.python_path:
            _python_path_file(venv, self.python_version, manifest.python_path)
        if manifest.targets:
            # The wheels resolved for this python and machine, exactly (no resolution here).
            target = fitting_target(manifest.targets, self.python_version, platform.machine())
            if target is None:
                raise InstallError("install", f"the package carries no wheels for python "
                                   f"{self.python_version} on {machine_arch(platform.machine())} "
                                   f"(it carries {carried(manifest.targets)})")
            await self._run("install", [
                sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                "install", "--quiet", "--disable-pip-version-check", "--no-input", "--no-index",
                "--no-deps", *(str(staging / "app" / "wheels" / w) for w in target.wheels),
            ])
        elif manifest.wheels:
            await self._run("install", [
                sys.executable, "-m", "pip", "--python", str(staging / "venv" / "bin" / "python"),
                "install", "--quiet", "--disable-pip-version-check", "--no-input", "--no-index",
                "--find-links", str(staging / "app" / "wheels"), *manifest.dependencies,
            ])

    async def _run(self, stage: str, argv: list[str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(self.pip_timeout_s):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise InstallError(stage, f"{argv[2]} timed out after {self.pip_timeout_s:.0f}s") from None
        if proc.returncode != 0:
            tail = " | ".join(out.decode(errors="replace").strip().splitlines()[-3:])
            raise InstallError(stage, f"{' '.join(argv[1:4])} failed ({proc.returncode}): {tail}")

    def remove(self, package: PackageInfo) -> None:
        shutil.rmtree(self.location(package), ignore_errors=True)

    def remove_app(self, name: str) -> None:
        shutil.rmtree(self.app_root(name), ignore_errors=True)

    def prune(self, name: str, keep: list[PackageInfo]) -> None:
        """Remove every installed version of `name` but the ones to keep (active and previous)."""
        keep_dirs = {self.location(p).name for p in keep}
        app_root = self.app_root(name)
        if not app_root.is_dir():
            return
        for child in app_root.iterdir():
            if child.name not in keep_dirs:
                shutil.rmtree(child, ignore_errors=True)
