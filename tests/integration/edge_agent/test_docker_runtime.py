"""Docker-mode apps end to end: real signed docker packages, a real NATS, real agent processes
given `--docker-host` of a private Docker engine (the `docker_engine` session fixture; these
tests skip, with its reason, where no engine can run). Images build on the locally made Python
3.11 base image; nothing is pulled."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sdv_packager.application import package_info
from sdv_packager.build.pipeline import build_package
from sdv_packager.build.wheels import WheelSource

pytestmark = pytest.mark.timeout(300)  # the session's first test may build the base image (~1 min)
MB = 1024 * 1024
BUILD_S = 90.0  # an app image builds in seconds; the margin is for a loaded CI machine


def docker_agent(fleet: Any, device: str, engine: Any, **env: str) -> Any:
    return fleet.agent(device, ["--docker-host", engine.url],
                       SDV_AGENT_DOCKER_BASE_IMAGE=engine.base_image, **env)


def containers_of(engine: Any, device: str) -> list[Any]:
    return engine.client.containers.list(all=True, filters={"label": f"org.sdv.agent={device}"})


def images_of(engine: Any, device: str) -> list[Any]:
    return engine.client.images.list(filters={"label": f"org.sdv.agent={device}"})


def ticks(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("tick ")]


async def publish_ticker(fleet: Any, harness: Any, tmp_path: Path, version: str = "1.0.0") -> Any:
    return await fleet.publish(harness.make_app(tmp_path, "ticker", version, harness.ticker_source(),
                                                runtime="docker", memory="128MB"))


async def test_docker_app_runs_in_a_hardened_limited_container_and_streams_its_console_in_order(
    fleet: Any, harness: Any, docker_host: Any, tmp_path: Path
) -> None:
    pkg = await publish_ticker(fleet, harness, tmp_path)
    assert pkg.runtime == "docker"
    agent = docker_agent(fleet, "dk-run", docker_host)
    await fleet.desire("dk-run", 1, {"ticker": pkg})

    await fleet.fact("dk-run", "AppHealthy", app="ticker", timeout=BUILD_S)
    assert fleet.fact_types("dk-run", "ticker")[:4] == ["AppDownloadStarted", "AppInstalled", "AppStarted",
                                                        "AppHealthy"]
    rep = await fleet.until_state("dk-run", "ticker", "RUNNING", healthy=True)

    [container] = containers_of(docker_host, "dk-run")
    assert container.name == "sdv-dk-run-ticker-1.0.0"
    assert container.labels["org.sdv.app"] == "ticker"
    assert container.labels["org.sdv.version"] == "1.0.0"
    assert container.labels["org.sdv.digest"] == pkg.digest
    assert container.attrs["State"]["Pid"] == rep.pid
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 128 * MB
    assert host["MemorySwap"] == 128 * MB  # no swap beyond the limit
    assert host["NanoCpus"] == int(pkg.resources.cpu * 1e9)
    assert host["PidsLimit"] == 256
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["NetworkMode"] == "host"  # kuksa-only: the databroker is on the host
    assert host["Init"] is True
    assert host["Tmpfs"] == {"/tmp": "size=64m"}
    assert container.attrs["Config"]["User"] == "10001:10001"
    assert container.image.tags == [f"sdv-app/ticker:1.0.0-{pkg.digest[:12]}"]
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["SDV_APP_VERSION"] == "1.0.0"
    assert env["HOME"] == "/tmp"
    assert env["PATH"].startswith("/opt/venv/bin:")  # the image's, not the agent host's
    assert "VIRTUAL_ENV" not in container.attrs["Config"]["Env"]  # the host's venv path is dropped
    # The installer laid out files only: the image holds the venv.
    assert not list((agent.data_dir / "apps" / "ticker").glob("*/venv"))

    # Every stdout line exactly once, in order; stderr apart from it.
    await fleet.until(lambda: len(ticks(fleet.lines("dk-run", "ticker"))) > 20, what="20 ticks on the bus")
    lines = fleet.lines("dk-run", "ticker")
    assert lines[0].startswith("ticker 1.0.0 ")
    got = ticks(lines)
    assert got == list(range(1, len(got) + 1))
    assert fleet.lines("dk-run", "ticker", "stderr") == []

    reply = await fleet.op("dk-run", "stdin", {"app": "ticker", "data": "hello container\n"})
    assert reply["status"] == "ok"
    await fleet.until(lambda: "echo: hello container" in fleet.lines("dk-run", "ticker"), what="echo")
    assert "docker: mem_limit" in agent.log()  # the limits the agent reports include the container's
    assert "Traceback" not in agent.log()


async def test_pause_freezes_the_container_resume_thaws_it_and_stop_then_uninstall_leave_nothing(
    fleet: Any, harness: Any, docker_host: Any, tmp_path: Path
) -> None:
    pkg = await publish_ticker(fleet, harness, tmp_path)
    agent = docker_agent(fleet, "dk-life", docker_host)
    await fleet.desire("dk-life", 1, {"ticker": pkg})
    await fleet.until_state("dk-life", "ticker", "RUNNING", healthy=True, timeout=BUILD_S)
    await fleet.until(lambda: len(fleet.lines("dk-life", "ticker")) > 5, what="output")

    await fleet.desire("dk-life", 2, {"ticker": (pkg, "paused")})
    await fleet.fact("dk-life", "AppPaused", app="ticker")
    [container] = containers_of(docker_host, "dk-life")
    assert container.attrs["State"]["Paused"] is True
    await asyncio.sleep(0.3)  # lines already printed may still be on their way
    before = len(fleet.lines("dk-life", "ticker"))
    await asyncio.sleep(0.6)
    assert len(fleet.lines("dk-life", "ticker")) == before

    await fleet.desire("dk-life", 3, {"ticker": pkg})
    await fleet.fact("dk-life", "AppResumed", app="ticker")
    await fleet.until(lambda: len(fleet.lines("dk-life", "ticker")) > before + 5, what="output after resume")

    await fleet.desire("dk-life", 4, {"ticker": (pkg, "stopped")})
    stopped = await fleet.fact("dk-life", "AppStopped", app="ticker")
    assert stopped.data.exit_code == 0  # SIGTERM reached the app through the container's init
    await fleet.until_state("dk-life", "ticker", "STOPPED")
    assert fleet.lines("dk-life", "ticker")[-1] == "bye"  # its last words were not lost
    got = ticks(fleet.lines("dk-life", "ticker"))
    assert got == list(range(1, len(got) + 1))
    await fleet.until(lambda: not containers_of(docker_host, "dk-life"), what="container removed")
    assert images_of(docker_host, "dk-life")  # a stopped app keeps its image

    await fleet.desire("dk-life", 5, {})
    await fleet.fact("dk-life", "AppUninstalled", app="ticker")
    await fleet.until(lambda: not images_of(docker_host, "dk-life"), what="image removed")
    assert not containers_of(docker_host, "dk-life")
    assert not docker_host.client.images.list(name="sdv-app/ticker")
    assert not (agent.data_dir / "apps" / "ticker").exists()
    assert agent.records() == {}


async def test_container_past_its_memory_limit_is_oom_killed_and_reported(
    fleet: Any, harness: Any, docker_host: Any, tmp_path: Path
) -> None:
    hog = harness.make_app(tmp_path, "hog", "1.0.0", (
        "import time\nblobs = []\nwhile True:\n    blobs.append(bytearray(16 * 1024 * 1024))\n"
        "    print('holding', 16 * len(blobs), 'MB', flush=True)\n    time.sleep(0.01)\n"),
        runtime="docker", memory="128MB", alive_for=5)
    pkg = await fleet.publish(hog)
    agent = docker_agent(fleet, "dk-oom", docker_host, SDV_AGENT_RESTART_BASE_S="0.1", SDV_AGENT_CRASH_LOOP="2")
    await fleet.desire("dk-oom", 1, {"hog": pkg})

    failed = await fleet.fact("dk-oom", "AppFailed", app="hog", timeout=BUILD_S)
    assert failed.data.stage == "run"
    assert "memory limit exceeded (OOM-killed)" in failed.data.reason
    rep = await fleet.until_state("dk-oom", "hog", "FAILED")
    assert "OOM-killed" in (rep.last_error or "")
    held = [int(line.split()[1]) for line in fleet.lines("dk-oom", "hog") if line.startswith("holding")]
    assert held
    assert max(held) <= 128  # the kernel stopped it at the container's limit, not the agent's watchdog
    assert "memory_limit_exceeded" not in agent.log()
    await fleet.until(lambda: not containers_of(docker_host, "dk-oom"), what="ended containers removed")


async def test_agent_killed_and_restarted_re_adopts_its_container_and_the_console_continues(
    fleet: Any, harness: Any, docker_host: Any, tmp_path: Path
) -> None:
    pkg = await publish_ticker(fleet, harness, tmp_path)
    first = docker_agent(fleet, "dk-adopt", docker_host)
    await fleet.desire("dk-adopt", 1, {"ticker": pkg})
    rep = await fleet.until_state("dk-adopt", "ticker", "RUNNING", healthy=True, timeout=BUILD_S)
    await fleet.until(lambda: len(ticks(fleet.lines("dk-adopt", "ticker"))) > 10, what="ticks")
    [container] = containers_of(docker_host, "dk-adopt")

    first.kill()  # SIGKILL: no chance to save anything more
    await asyncio.sleep(1.0)  # the app goes on printing while no agent reads
    container.reload()
    assert container.status == "running"
    seen = len(ticks(fleet.lines("dk-adopt", "ticker")))

    second = docker_agent(fleet, "dk-adopt", docker_host)
    await fleet.until(lambda: "re_adopted" in second.log(), what="re-adoption")
    await fleet.until(lambda: len(ticks(fleet.lines("dk-adopt", "ticker"))) > seen + 40, what="more ticks")
    [again] = containers_of(docker_host, "dk-adopt")
    assert again.id == container.id  # the same container: not restarted, no duplicate
    assert (await fleet.until_state("dk-adopt", "ticker", "RUNNING")).pid == rep.pid
    assert len(fleet.find_facts("dk-adopt", "AppStarted", app="ticker")) == 1
    # Nothing lost while no agent ran, nothing repeated: in the agent's own console store (what
    # the follower delivered) and in the SDV_LOGS stream (deduplicated by message id: the agent
    # killed between publishing a line and marking it sent publishes it again).
    db = sqlite3.connect(second.data_dir / "agent.db")
    try:
        stored = [line for (line,) in db.execute(
            "SELECT line FROM logs WHERE app = 'ticker' AND stream = 'stdout' ORDER BY id")]
    finally:
        db.close()
    assert ticks(stored) == list(range(1, len(ticks(stored)) + 1))
    assert len(ticks(stored)) > seen + 40
    msgs = await harness.stream_messages(fleet.js, "SDV_LOGS", "sdv.logs.dk-adopt.ticker.stdout")
    shipped = ticks([m.data.decode() for m in msgs])
    assert shipped == list(range(1, len(shipped) + 1))
    assert "Traceback" not in first.log() + second.log()


async def test_upgrade_prunes_images_older_than_the_previous_version(
    fleet: Any, harness: Any, docker_host: Any, tmp_path: Path
) -> None:
    versions = [await publish_ticker(fleet, harness, tmp_path, v) for v in ("1.0.0", "1.1.0", "1.2.0")]
    docker_agent(fleet, "dk-up", docker_host)
    for revision, pkg in enumerate(versions, start=1):
        await fleet.desire("dk-up", revision, {"ticker": pkg})
        await fleet.until_state("dk-up", "ticker", "RUNNING", healthy=True, version=pkg.version, timeout=BUILD_S)

    def tags() -> set[str]:
        return {tag for image in images_of(docker_host, "dk-up") for tag in image.tags}

    await fleet.until(lambda: len(tags()) == 2, what="two images left")
    assert tags() == {f"sdv-app/ticker:{p.version}-{p.digest[:12]}" for p in versions[1:]}  # active + previous
    [container] = containers_of(docker_host, "dk-up")
    assert container.labels["org.sdv.version"] == "1.2.0"


async def test_health_command_runs_inside_the_container(
    fleet: Any, harness: Any, docker_host: Any, tmp_path: Path
) -> None:
    # Passes only in the container: where the app made /tmp/ready (its tmpfs) and `python` is
    # the image's /opt/venv one. On the host it would fail.
    check = "import os, sys\nsys.exit(0 if os.path.exists('/tmp/ready') and sys.prefix == '/opt/venv' else 3)\n"
    main = "import pathlib, time\ntime.sleep(0.5)\npathlib.Path('/tmp/ready').touch()\ntime.sleep(600)\n"
    app = harness.make_app(tmp_path, "checked", "1.0.0", main, runtime="docker",
                           files={"check.py": check}, health_command=["python", "check.py"])
    pkg = await fleet.publish(app)
    assert pkg.health.command == ["python", "check.py"]
    docker_agent(fleet, "dk-health", docker_host)
    await fleet.desire("dk-health", 1, {"checked": pkg})
    await fleet.fact("dk-health", "AppHealthy", app="checked", timeout=BUILD_S)
    assert not fleet.find_facts("dk-health", "AppFailed")


def pure_wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A minimal pure-Python wheel, made by hand: the package's wheelhouse for an offline build."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: sdv-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


async def test_bundled_wheels_install_offline_into_the_image_venv_on_the_debian_base(
    fleet: Any, harness: Any, docker_host: Any, tmp_path: Path
) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    pure_wheel(wheelhouse, "greet", "1.0", "def hello():\n    return 'hello from a bundled wheel'\n")
    main = "import time, greet\nprint(greet.hello(), flush=True)\ntime.sleep(600)\n"
    app = harness.make_app(tmp_path, "greeter", "1.0.0", main, runtime="docker", dependencies=["greet==1.0"])
    built = build_package(app, harness.catalog(), WheelSource(find_links=wheelhouse, no_index=True))
    pkg = package_info(built, fleet.signer)
    assert pkg.bundled_wheels == ["greet-1.0-py3-none-any.whl"]
    await fleet.put_artifact(pkg.object_name, built.artifact)
    docker_agent(fleet, "dk-wheels", docker_host)
    await fleet.desire("dk-wheels", 1, {"greeter": pkg})
    await fleet.until_state("dk-wheels", "greeter", "RUNNING", healthy=True, timeout=BUILD_S)
    await fleet.until(lambda: fleet.lines("dk-wheels", "greeter") == ["hello from a bundled wheel"],
                      what="the wheel's greeting")


async def test_docker_package_is_refused_on_a_device_without_a_docker_engine(
    fleet: Any, harness: Any, tmp_path: Path
) -> None:
    pkg = await publish_ticker(fleet, harness, tmp_path)
    agent = fleet.agent("dk-none", DOCKER_HOST="", SDV_AGENT_DOCKER_HOST="")
    await fleet.desire("dk-none", 1, {"ticker": pkg})

    failed = await fleet.fact("dk-none", "AppFailed", app="ticker")
    assert failed.data.stage == "install"
    assert failed.data.reason == "needs the docker runtime; the docker runtime is not available on this device (it runs native apps only)"
    rep = await fleet.until_state("dk-none", "ticker", "FAILED")
    assert "needs the docker runtime" in (rep.last_error or "")
    assert "docker_runtime_unavailable" in agent.log()
    assert not (agent.data_dir / "apps" / "ticker").exists()  # refused before any download


async def test_agent_restarted_without_its_engine_keeps_native_apps_and_reports_the_docker_app(
    fleet: Any, harness: Any, docker_host: Any, tmp_path: Path
) -> None:
    """The engine does not answer when the agent comes back (say, dockerd starts later at boot):
    the agent still starts, re-adopts its native app, and reports the docker app FAILED with
    the reason, leaving its container alone."""
    docker_pkg = await publish_ticker(fleet, harness, tmp_path)
    native_pkg = await fleet.publish(harness.make_app(tmp_path, "native-ticker", "1.0.0", harness.ticker_source()))
    first = docker_agent(fleet, "dk-gone", docker_host)
    await fleet.desire("dk-gone", 1, {"ticker": docker_pkg, "native-ticker": native_pkg})
    await fleet.until_state("dk-gone", "ticker", "RUNNING", healthy=True, timeout=BUILD_S)
    native = await fleet.until_state("dk-gone", "native-ticker", "RUNNING", healthy=True)
    first.kill()

    second = fleet.agent("dk-gone", ["--docker-host", f"unix://{tmp_path}/no-engine.sock"])
    await fleet.until(lambda: "re_adopted" in second.log(), what="the native app re-adopted")
    failed = await fleet.until_state("dk-gone", "ticker", "FAILED")
    assert "docker runtime is not available" in (failed.last_error or "")
    assert (await fleet.until_state("dk-gone", "native-ticker", "RUNNING")).pid == native.pid
    [container] = containers_of(docker_host, "dk-gone")
    assert container.status == "running"  # not ours to kill without the engine's say
    assert "Traceback" not in second.log()
