"""Packager benchmark: publish through the real service beside raw tar.gz / object-store baselines.

    .venv/bin/python bench/packager.py [--quick]

Starts its own PostgreSQL and NATS (sdv_events.servers) unless SDV_DATABASE_URL / SDV_NATS_URL
are set, runs the packager service in-process on them (fresh schema `bench_<run>`), and times:

- a small app (examples/apps/speed-monitor with `dependencies = []`): end-to-end publish through
  the service (client tar + upload, validate, build, sign, store the artifact, append
  `PackagePublished`, reply), and build + sign alone in-process;
- the same app with a few pure-Python wheels (attrs, six, idna), pre-downloaded into a temporary
  wheelhouse before the clock starts; the service runs with `wheelhouse=DIR, wheels_offline=True`,
  so the timed part uses no network.

Each figure is printed beside raw baselines measured in the same run, rounds interleaved: tar.gz
(`tarfile`, gzip level 9) of the same files from disk, `ObjectStore.put` of the same artifact
bytes, and (wheels) the bare `pip download --no-index` the build runs. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats
from rich.console import Console
from rich.table import Table

from sdv_client.packages import PackagerClient
from sdv_events.bus import CommandClient
from sdv_events.logs import configure_logging
from sdv_events.package_format import read_artifact
from sdv_events.provisioning import PACKAGES_BUCKET
from sdv_events.servers import NatsServer, PostgresServer
from sdv_events.service import Ping, ServiceHealth
from sdv_packager.app import load_catalog, serve
from sdv_packager.build.pipeline import build_package
from sdv_packager.build.wheels import WheelSource, compatible_platforms
from sdv_packager.settings import PackagerSettings
from sdv_packager.signing import Signer

console = Console(width=None if sys.stdout.isatty() else 110)
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "apps" / "speed-monitor"
WHEELS = ["attrs", "six", "idna"]
GOAL_S = 1.0


@dataclass(frozen=True)
class Sizes:
    small_rounds: int   # timed rounds of the no-dependency app (after one warm-up)
    wheel_rounds: int   # timed rounds of the app with wheels (after one warm-up)


QUICK = Sizes(small_rounds=30, wheel_rounds=5)
FULL = Sizes(small_rounds=100, wheel_rounds=15)


@dataclass
class Samples:
    publish: list[float] = field(default_factory=list)      # end-to-end through the service
    build: list[float] = field(default_factory=list)        # build_package + sign, in-process
    raw_tar: list[float] = field(default_factory=list)
    raw_put: list[float] = field(default_factory=list)
    raw_pip: list[float] = field(default_factory=list)
    artifact_bytes: int = 0
    members: int = 0


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p95(xs: list[float]) -> float:
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=20, method="inclusive")[18]


# --- the apps -----------------------------------------------------------------------------------


def make_app(dest: Path, name: str, dependencies: list[str]) -> Path:
    """A copy of the speed-monitor example under another name, with these dependencies."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    toml = (dest / "sdv-app.toml").read_text()
    toml = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', toml, count=1)
    toml = re.sub(r"(?m)^dependencies = \[.*\]$", f"dependencies = {json.dumps(dependencies)}", toml,
                  count=1)
    (dest / "sdv-app.toml").write_text(toml)
    return dest


def set_version(app: Path, version: str) -> None:
    path = app / "sdv-app.toml"
    path.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', path.read_text(), count=1))


def predownload(wheelhouse: Path) -> None:
    """Fill the wheelhouse before any clock runs (this is the only step that may use the network)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--dest", str(wheelhouse), *WHEELS],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0 or not list(wheelhouse.glob("*.whl")):
        raise SystemExit(f"pip download of {WHEELS} into the wheelhouse failed:\n{result.stderr}")


def raw_pip_args(dest: str, wheelhouse: Path, source: WheelSource) -> list[str]:
    """The `pip download` the build runs (build/wheels.py), offline from the wheelhouse."""
    return [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--dest", dest, "--python-version", "3.11", "--implementation",
            "cp", *(f"--platform={tag}" for tag in [*compatible_platforms(source.platforms[0]), "any"]),
            "--find-links", str(wheelhouse), "--no-index", *WHEELS]


def raw_tar_gz(root: Path) -> bytes:
    """The baseline packer: tarfile + gzip (level 9, as the build) of files already on disk."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=9) as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return out.getvalue()


# --- harness ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[tuple[str, str]]:
    """(database url, nats url): from the environment, or servers of our own until exit."""
    with contextlib.ExitStack() as stack:
        dsn = os.environ.get("SDV_DATABASE_URL") or stack.enter_context(PostgresServer()).url
        nats_url = os.environ.get("SDV_NATS_URL") or stack.enter_context(NatsServer()).url
        yield dsn, nats_url


async def wait_ready(nc: nats.NATS, task: asyncio.Task[None]) -> None:
    pings = CommandClient(nc, timeout=1.0)
    for _ in range(200):
        try:
            await pings.call("packager", "ping", Ping(), ServiceHealth)
            return
        except Exception:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    raise SystemExit("the packager service did not answer its ping")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def atimed(fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def measure(
    label: str, app: Path, rounds: int, *, client: PackagerClient, bucket, source: WheelSource,  # type: ignore[no-untyped-def]
    signer: Signer, catalog, wheelhouse: Path | None, run: str, cleanup: list[str], tmp: Path,  # type: ignore[no-untyped-def]
) -> Samples:
    s = Samples()
    built = build_package(app, catalog, source)
    _, _, members = read_artifact(built.artifact)
    s.artifact_bytes, s.members = len(built.artifact), len(members)
    # The same files, on disk, for the raw tar baseline (what a naive packer would read).
    files = tmp / f"{label}-files"
    for name, data in members.items():
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        (files / name).write_bytes(data)

    def build_and_sign() -> None:
        b = build_package(app, catalog, source)
        signer.sign(b.manifest_digest)

    def pip_raw() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-pip-") as dest:
            subprocess.run(raw_pip_args(dest, wheelhouse, source), check=True,  # type: ignore[arg-type]
                           capture_output=True)

    async def publish(version: str) -> float:
        set_version(app, version)
        t0 = time.perf_counter()
        info = await client.publish_dir(app)
        dt = time.perf_counter() - t0
        cleanup.append(info.object_name)
        assert info.version == version, info
        return dt

    async def raw_put(i: int) -> float:
        name = f"bench-raw/{run}/{label}/{i}"
        cleanup.append(name)
        return await atimed(lambda: bucket.put(name, built.artifact))

    # Warm-up (imports, first connection, first pip run), not counted.
    await publish("0.0.1")
    build_and_sign()
    raw_tar_gz(files)
    await raw_put(-1)
    if wheelhouse is not None:
        pip_raw()

    for i in range(rounds):
        steps: list[Callable[[], Awaitable[None]]] = []

        async def do_publish(i: int = i) -> None:
            s.publish.append(await publish(f"1.0.{i}"))

        async def do_build() -> None:
            s.build.append(await asyncio.to_thread(timed, build_and_sign))

        async def do_tar() -> None:
            s.raw_tar.append(await asyncio.to_thread(timed, lambda: raw_tar_gz(files)))

        async def do_put(i: int = i) -> None:
            s.raw_put.append(await raw_put(i))

        async def do_pip() -> None:
            s.raw_pip.append(await asyncio.to_thread(timed, pip_raw))

        steps = [do_publish, do_build, do_tar, do_put] + ([do_pip] if wheelhouse else [])
        for step in steps if i % 2 == 0 else reversed(steps):  # alternate who goes first
            await step()
    return s


async def bench(sizes: Sizes) -> tuple[Samples, Samples]:
    run = uuid.uuid4().hex[:8]
    schema = f"bench_{run}"
    small_name, wheels_name = f"bench-small-{run}", f"bench-wheels-{run}"
    with tempfile.TemporaryDirectory(prefix="sdv-bench-packager-") as tmp_str:
        tmp = Path(tmp_str)
        wheelhouse = tmp / "wheelhouse"
        wheelhouse.mkdir()
        t0 = time.perf_counter()
        predownload(wheelhouse)
        console.print(f"[dim]wheelhouse: {sorted(p.name for p in wheelhouse.glob('*.whl'))} "
                      f"({time.perf_counter() - t0:.1f}s, not timed)[/dim]")
        small = make_app(tmp / "small", small_name, [])
        with_wheels = make_app(tmp / "wheels", wheels_name, WHEELS)

        async with servers() as (dsn, nats_url), contextlib.AsyncExitStack() as stack:
            settings = PackagerSettings(
                service="packager", nats_url=nats_url, database_url=dsn, schema_name=schema,
                signing_key_path=tmp / "keys" / "packager.pem", wheelhouse=wheelhouse,
                wheels_offline=True, log_level="WARNING",
            )
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            stack.push_async_callback(pool.close)
            stack.push_async_callback(pool.execute, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            nc = await nats.connect(nats_url, name=f"bench-packager-{run}")
            stack.push_async_callback(nc.drain)
            js = nc.jetstream()
            cleanup: list[str] = []

            async def remove_ours() -> None:  # on servers that may be shared
                bucket = await js.object_store(PACKAGES_BUCKET)
                for name in cleanup:
                    with contextlib.suppress(Exception):
                        await bucket.delete(name)
                # Our events stay on SDV_EVENTS (it denies purges); its retention ages them out.

            stack.push_async_callback(remove_ours)
            stop = asyncio.Event()
            service = asyncio.create_task(serve(settings, stop))

            async def stop_service() -> None:
                stop.set()
                await asyncio.wait_for(service, 20)

            stack.push_async_callback(stop_service)
            await wait_ready(nc, service)
            bucket = await js.object_store(PACKAGES_BUCKET)
            client = PackagerClient(nc, actor="bench")
            signer = Signer.load_or_create(settings.signing_key_path)
            catalog = load_catalog(settings)
            common = dict(client=client, bucket=bucket, signer=signer, catalog=catalog, run=run,
                          cleanup=cleanup, tmp=tmp)

            t0 = time.perf_counter()
            a = await measure("small", small, sizes.small_rounds, source=WheelSource(),
                              wheelhouse=None, **common)  # type: ignore[arg-type]
            console.print(f"[dim]small app: {time.perf_counter() - t0:.1f}s, "
                          f"load average {os.getloadavg()[0]:.2f}[/dim]")
            t0 = time.perf_counter()
            b = await measure("wheels", with_wheels, sizes.wheel_rounds,
                              source=WheelSource(find_links=wheelhouse, no_index=True),
                              wheelhouse=wheelhouse, **common)  # type: ignore[arg-type]
            console.print(f"[dim]app with wheels: {time.perf_counter() - t0:.1f}s, "
                          f"load average {os.getloadavg()[0]:.2f}[/dim]")
            return a, b


def report(a: Samples, b: Samples, sizes: Sizes) -> dict[str, object]:
    raw_small = median(a.raw_tar) + median(a.raw_put)
    raw_wheels = median(b.raw_pip) + median(b.raw_tar) + median(b.raw_put)
    out: dict[str, object] = {
        "bench": "packager",
        "build_s": median(a.publish),
        "build_p95_s": p95(a.publish),
        "build_only_s": median(a.build),
        "raw_tar_s": median(a.raw_tar),
        "raw_put_s": median(a.raw_put),
        "build_ratio": median(a.publish) / raw_small,
        "build_with_wheels_s": median(b.publish),
        "build_with_wheels_p95_s": p95(b.publish),
        "build_only_with_wheels_s": median(b.build),
        "raw_pip_download_s": median(b.raw_pip),
        "raw_tar_wheels_s": median(b.raw_tar),
        "raw_put_wheels_s": median(b.raw_put),
        "build_with_wheels_ratio": median(b.publish) / raw_wheels,
        "artifact_bytes": a.artifact_bytes,
        "artifact_with_wheels_bytes": b.artifact_bytes,
        "runs": sizes.small_rounds,
        "runs_with_wheels": sizes.wheel_rounds,
        "goal_s": GOAL_S,
        "goal_met": median(a.publish) < GOAL_S,
        "goal_met_p95": p95(a.publish) < GOAL_S,
    }
    out = {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}

    table = Table(title="packager vs raw baselines (same run, seconds, median / p95)",
                  caption=f"{os.cpu_count()} CPUs, 1-min load average now {os.getloadavg()[0]:.2f}")
    for col in ("figure", "packager", "raw baseline", "ratio"):
        table.add_column(col, justify="left" if col == "figure" else "right")

    def mp(xs: list[float]) -> str:
        return f"{median(xs):.3f} / {p95(xs):.3f}"

    table.add_row(f"[b]small app[/b] ({a.members} files, {a.artifact_bytes:,} B artifact), "
                  f"{sizes.small_rounds} runs", "", "", "")
    table.add_row("  publish end-to-end through the service", mp(a.publish),
                  f"{raw_small:.4f}", f"{out['build_ratio']:.1f}x")
    table.add_row("  build + sign in-process (no service)", mp(a.build), "", "")
    table.add_row("  tar.gz of the same files", "", mp(a.raw_tar), "")
    table.add_row("  object-store put of the artifact", "", mp(a.raw_put), "")
    table.add_row(f"[b]app + {len(WHEELS)} wheels[/b] ({b.members} files, {b.artifact_bytes:,} B "
                  f"artifact), {sizes.wheel_rounds} runs", "", "", "")
    table.add_row("  publish end-to-end through the service", mp(b.publish),
                  f"{raw_wheels:.4f}", f"{out['build_with_wheels_ratio']:.1f}x")
    table.add_row("  build + sign in-process (no service)", mp(b.build), "", "")
    table.add_row("  pip download --no-index from the wheelhouse", "", mp(b.raw_pip), "")
    table.add_row("  tar.gz of the same files", "", mp(b.raw_tar), "")
    table.add_row("  object-store put of the artifact", "", mp(b.raw_put), "")
    console.print(table)
    verdict = "met" if out["goal_met"] else "NOT met"
    console.print(f"goal (small app packaged, signed and stored in < {GOAL_S:.0f} s): [b]{verdict}[/b] — "
                  f"median {out['build_s']} s, p95 {out['build_p95_s']} s")
    console.print("[dim]raw baseline of a publish = tar.gz + put (+ pip download for wheels); "
                  "ratio = packager / that sum[/dim]")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, under a minute")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING")
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    warnings.filterwarnings("ignore", message=".*active notification listener",
                            category=asyncpg.InterfaceWarning)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    a, b = asyncio.run(bench(sizes))
    out = report(a, b, sizes)
    console.print(f"[dim]total {time.perf_counter() - started:.1f}s[/dim]")
    sys.stdout.flush()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
