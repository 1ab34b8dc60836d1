"""`sdv package …`: publish, list, get, yank, promote and download vehicle app packages.

Talks to the packager service over NATS (`SDV_NATS_URL`, default nats://127.0.0.1:4222) through
`sdv_client.packages.PackagerClient`. Every command takes `--json`: one JSON object on stdout,
`{"ok": true, …}` or `{"ok": false, "error": …, "code": …, "details": {…}}`.

Exit codes: 0 done; 1 the packager refused (invalid app, conflict, not found, rejected, …);
2 usage error; 3 NATS or the packager cannot be reached (or did not answer in time);
4 a downloaded artifact failed verification (nothing written).

There is no `validate`: validation lives in the packager service (it needs the VSS catalog and
the build rules), the client may not import the service, and the service has no validate-only
command. `publish` reports every validation problem at once, and nothing is stored when the app
is invalid.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from sdv_client.app_template import MANIFEST_FILE, VELOCITAS_MANIFEST
from sdv_client.cli_support import (
    EXIT_USAGE,
    Failure,
    JsonOption,
    JsonUsageErrors,
    WideOption,
    builtins,
    emit_json,
    err,
    fail,
    failure_of,
    js_prefix,
    out,
    run,
    user,
    widen,
)
from sdv_client.packages import PackagerClient
from sdv_events.bus import CommandError
from sdv_events.package_format import PackageVerificationError, verify_artifact
from sdv_events.schemas.packages import PackageInfo, PackageView

T = TypeVar("T")

EXIT_VERIFY = 4

app = typer.Typer(help="Vehicle app packages: publish, list, get, yank, promote, download.",
                  no_args_is_help=True, cls=JsonUsageErrors)


class ChannelName(StrEnum):
    dev = "dev"
    beta = "beta"
    stable = "stable"


def _run(work: Callable[[PackagerClient], Awaitable[T]], as_json: bool) -> T:
    return run(lambda nc: work(PackagerClient(nc, actor=f"cli:{user()}", js_prefix=js_prefix())),
               as_json, "packager")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _info_table(info: PackageInfo, view: PackageView | None = None) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    channel = view.channel if view is not None else info.channel
    rows: list[tuple[str, str]] = [
        ("name", info.name), ("version", info.version), ("channel", channel),
        ("digest", f"sha256:{info.digest}"), ("size", _size(info.size)),
    ]
    if view is not None:
        rows.append(("yanked", f"yes — {view.yank_reason}" if view.yanked else "no"))
    rows += [
        ("runtime", info.runtime), ("entry point", info.entry_point),
        ("python", info.python_version), ("key id", info.key_id),
        ("manifest digest", info.manifest_digest),
    ]
    if info.description:
        rows.append(("description", info.description))
    if info.vss_reads:
        rows.append(("vss reads", ", ".join(info.vss_reads)))
    if info.vss_writes:
        rows.append(("vss writes", ", ".join(info.vss_writes)))
    if info.dependencies:
        rows.append(("dependencies", ", ".join(info.dependencies)))
    if info.bundled_wheels:
        rows.append(("bundled wheels", ", ".join(info.bundled_wheels)))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _print_view(view: PackageView, as_json: bool, **extra: Any) -> None:
    if as_json:
        emit_json({"ok": True, **extra, "package": builtins(view)})
    else:
        out.print(_info_table(view.info, view))


# --- commands ----------------------------------------------------------------------------------


@app.command()
def publish(
    app_dir: Path = typer.Argument(..., help="The app directory (with its sdv-app.toml, or an "
                                   "Eclipse Velocitas app/AppManifest.json).",
                                   exists=True, file_okay=False, dir_okay=True),
    version: str | None = typer.Option(None, "--version", help="The version to publish (required "
                                       "for a Velocitas app without sdv-app.toml: its manifest "
                                       "has no version)."),
    as_json: bool = JsonOption,
) -> None:
    """Upload an app directory; the packager validates, builds, signs and stores it."""
    if not (app_dir / MANIFEST_FILE).is_file() and not (app_dir / VELOCITAS_MANIFEST).is_file():
        fail(Failure(f"{app_dir}: no {MANIFEST_FILE} in this folder (`sdv app init NAME` writes one), "
                     f"nor an Eclipse Velocitas {VELOCITAS_MANIFEST}",
                     code="invalid_request", exit_code=EXIT_USAGE), as_json)

    async def work(client: PackagerClient) -> PackageInfo:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err, transient=True, disable=as_json) as progress:
            progress.add_task(f"publishing {app_dir}: upload, validate, build, sign, store")
            try:
                return await client.publish_dir(app_dir, version=version)
            except CommandError as exc:
                raise in_folder(failure_of(exc, "packager"), app_dir) from None

    info = _run(work, as_json)
    if as_json:
        emit_json({"ok": True, "package": builtins(info)})
        return
    out.print(f"[green]published[/] {info.name} {info.version}", highlight=False)
    out.print(_info_table(info))


def in_folder(failure: Failure, app_dir: Path) -> Failure:
    """The packager names files inside the upload (`main.py:3`, `sdv-app.toml: app.version`):
    said of the folder the user passed, so they can be opened as they are written."""
    failure.message = f"{app_dir}: {failure.message}"
    failure.details = {_in(app_dir, where): message for where, message in failure.details.items()}
    return failure


def _in(app_dir: Path, where: str) -> str:
    """`main.py:3` → `<folder>/main.py:3`; a manifest field (`vss.writes`) → `<folder>/sdv-app.toml: …`."""
    file = where.split(":", 1)[0]
    if file and (app_dir / file).exists():
        return f"{app_dir / file}{where[len(file):]}"
    return f"{app_dir / MANIFEST_FILE}: {where}"


@app.command("list")
def list_(
    name: str | None = typer.Option(None, "--name", help="Only this app."),
    channel: ChannelName | None = typer.Option(None, "--channel", help="Only this channel."),
    include_yanked: bool = typer.Option(True, "--include-yanked/--no-yanked",
                                        help="Show yanked versions too (default) or hide them."),
    wide: bool = WideOption,
    as_json: bool = JsonOption,
) -> None:
    """Published packages, from the packager's catalog (filter by name and channel)."""
    views = _run(lambda c: c.list(name, channel.value if channel else None, include_yanked),
                 as_json)
    if as_json:
        emit_json({"ok": True, "packages": builtins(views)})
        return
    if not views:
        err.print("no packages match")
        return
    whole = widen(wide)
    table = Table(title="packages")
    for column in ("name", "version", "channel", "yanked", "digest", "size", "runtime", "wheels"):
        table.add_column(column, justify="right" if column in ("size", "wheels") else "left")
    for v in views:
        table.add_row(
            v.info.name, v.info.version, v.channel,
            f"[red]yes[/] ({v.yank_reason})" if v.yanked else "",
            v.info.digest if whole else v.info.digest[:12], _size(v.info.size), v.info.runtime,
            str(len(v.info.bundled_wheels)),
        )
    out.print(table)


@app.command()
def get(
    name: str = typer.Argument(..., help="App name."),
    version: str = typer.Argument(..., help="App version."),
    as_json: bool = JsonOption,
) -> None:
    """One package version: metadata, channel and yank state."""
    _print_view(_run(lambda c: c.get(name, version), as_json), as_json)


@app.command()
def yank(
    name: str = typer.Argument(..., help="App name."),
    version: str = typer.Argument(..., help="App version."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the event history)."),
    as_json: bool = JsonOption,
) -> None:
    """Withdraw a version, with the reason (recorded as an event; the artifact stays for audit)."""
    view = _run(lambda c: c.yank(name, version, reason), as_json)
    if not as_json:
        out.print(f"[yellow]yanked[/] {name} {version}: {reason}", highlight=False)
    _print_view(view, as_json)


@app.command()
def promote(
    name: str = typer.Argument(..., help="App name."),
    version: str = typer.Argument(..., help="App version."),
    channel: ChannelName = typer.Argument(..., help="Target channel."),
    as_json: bool = JsonOption,
) -> None:
    """Move a version to another channel (dev → beta → stable)."""
    view = _run(lambda c: c.promote(name, version, channel.value), as_json)
    if not as_json:
        out.print(f"[green]promoted[/] {name} {version} to {view.channel}", highlight=False)
    _print_view(view, as_json)


@app.command()
def download(
    name: str = typer.Argument(..., help="App name."),
    version: str = typer.Argument(..., help="App version."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the artifact (tar.gz).",
                                dir_okay=False, resolve_path=True),
    public_key: str | None = typer.Option(
        None, "--public-key", envvar="SDV_PACKAGER_PUBLIC_KEY",
        help="Base64 Ed25519 public key to verify against (pin it); default: the key the "
             "packager reports, which must match the package's key id."),
    as_json: bool = JsonOption,
) -> None:
    """Fetch an artifact, verify digest, signature and per-file hashes, then write it."""

    async def work(client: PackagerClient) -> tuple[PackageView, str, int]:
        view = await client.get(name, version)
        key = public_key
        if key is None:
            signing = await client.signing_key()
            if signing.key_id != view.info.key_id:
                raise Failure(
                    f"{name} {version} was signed with key {view.info.key_id}, the packager now "
                    f"reports key {signing.key_id}; pass --public-key to verify against the old key",
                    code="verification_failed", exit_code=EXIT_VERIFY)
            key = signing.public_key_b64
        artifact = await client.download(view.info)
        try:
            manifest, _ = verify_artifact(artifact, digest=view.info.digest,
                                          signature_b64=view.info.signature, public_key_b64=key)
        except PackageVerificationError as exc:
            raise Failure(f"{name} {version}: {exc}; nothing written", code="verification_failed",
                          exit_code=EXIT_VERIFY) from None
        if (manifest.name, manifest.version) != (name, version):
            raise Failure(f"artifact holds {manifest.name} {manifest.version}, not {name} {version}",
                          code="verification_failed", exit_code=EXIT_VERIFY)
        _write_atomically(output, artifact)
        return view, key, len(artifact)

    view, _, size = _run(work, as_json)
    if as_json:
        emit_json({"ok": True, "file": str(output), "verified": True, "digest": view.info.digest,
                    "size": size, "key_id": view.info.key_id, "yanked": view.yanked,
                    "package": builtins(view)})
        return
    if view.yanked:
        err.print(f"[yellow]warning:[/] {name} {version} is yanked ({view.yank_reason})",
                  highlight=False)
    out.print(f"[green]verified[/] {name} {version} (sha256:{view.info.digest}, signature by key "
              f"{view.info.key_id}) → {output} ({_size(size)})", highlight=False)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> None:
    app(prog_name="sdv package")


if __name__ == "__main__":
    main()
