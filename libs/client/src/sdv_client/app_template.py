"""What `sdv app init NAME` writes: a working app folder — `sdv-app.toml` with every field the
packager reads explained, a `main.py` that reads Vehicle.Speed through the signal library the
packager generates (`vehicle_signals.py`, inside the package only), and a test of its logic that
runs with the standard library (`python -m unittest`)."""

from __future__ import annotations

import re
from pathlib import Path

# = sdv_packager.domain.manifest.NAME_RE (the client may not import the service; a test checks).
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$")
MANIFEST_FILE = "sdv-app.toml"
# An Eclipse Velocitas app publishes unchanged: its manifest (= sdv_packager APP_MANIFEST).
VELOCITAS_MANIFEST = "app/AppManifest.json"


class TemplateError(ValueError):
    """The app cannot be written: the message says why."""


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or "--" in name:
        raise TemplateError(f"{name!r} is not a valid app name: lowercase letters, digits and single "
                            "hyphens, starting with a letter, 2-64 characters")
    return name


MANIFEST = '''\
# The manifest of the vehicle app "{name}", read by the packager when you run
# `sdv package publish` on this folder. Every field it knows is here, with what it means; unknown
# fields are refused (a typo never passes silently).

[app]
# Lowercase letters, digits and single hyphens, starting with a letter (2-64 characters).
# A device runs at most one version of each app name.
name = "{name}"
# A semantic version (x.y.z, optionally -pre.release). Every publish needs a new one.
version = "0.1.0"
# One line, shown by `sdv package get` and the dashboard.
description = "Prints Vehicle.Speed as it changes and flags speeds over a limit"
# The Python file the agent runs, relative to this folder.
entry_point = "main.py"
# The Python version the app is built and run with (its own venv on the device).
python = "3.11"
# "native": a process in its own venv, sandboxed by the agent; "docker": an image the agent
# builds on the device and runs as a hardened container (the device needs a Docker engine).
runtime = "native"
# Where a new version lands: "dev", "beta" or "stable" (`sdv package promote` moves it on;
# rollout policies follow a channel).
channel = "dev"
# true: an upgrade starts the new version beside the old one and stops the old only once the new
# is healthy (no gap; the app must tolerate two copies for a moment). false: stop, then start.
hot_swap = false
# Plain PEP 508 requirements. The packager bundles them as wheels into the package (devices
# install offline); URLs, paths and pip options are refused. kuksa-client is what the generated
# signal library talks to the KUKSA databroker with.
dependencies = ["kuksa-client>=0.4"]
# Or a pip requirements file (pins are honoured exactly; `-c` constraints and `-r` includes are
# read) or a uv.lock, inside this folder. Whatever the build resolves is recorded in the signed
# package, and a rebuild of this version resolves to the same.
# requirements = "requirements.txt"
# A pip constraints file inside this folder.
# constraints = "constraints.txt"
# The wheel platforms the package carries (default: the packager's, x86_64 and aarch64
# manylinux): "x86_64", "aarch64", or a tag like "manylinux_2_28_aarch64". The device installs
# the one that fits it; a rollout excludes devices none fits.
# platforms = ["x86_64", "aarch64"]
# The Python versions it carries wheels for (default: python above).
# pythons = ["3.11", "3.12"]
# true: the app talks to the vehicle's MQTT broker (the agent hands it SDV_MQTT_ADDRESS; a
# rollout excludes devices without one).
mqtt = false

[vss]
# The VSS signals the app reads. The packager checks each against its VSS catalog and generates
# `vehicle_signals.py` (inside the package) with one typed attribute per signal:
# Vehicle.Speed -> vehicle.speed, with get() and subscribe().
reads = ["Vehicle.Speed"]
# The actuators the app sets; only these get a set(). For example
# writes = ["Vehicle.Cabin.Seat.Row1.DriverSide.Position"]
writes = []

[resources]
# The memory the app may use, at least 128MB: "256MB", "1GB", "512Mi" (or a number of MB).
memory = "128MB"
# Its share of the CPU, at least 0.1: "0.25" or "250m" (millicores).
cpu = "0.25"

[health]
# A new version is on trial until it has run this many seconds (0 < s <= 600) without exiting
# (and its health command, if any, passed); a rollout counts it as succeeded only then, and one
# that fails its trial is rolled back on the device.
alive_for_s = 3
# Optional: a program run in the app's sandbox that must exit 0 for the app to be healthy.
# command = ["python", "-c", "print('ok')"]
# How long the health command may take, seconds (0 < s <= 600).
timeout_s = 10

[security]
# "standard": a user of its own, no new privileges, private /tmp, at most 256 processes;
# "strict": standard plus tighter limits (256 open files, 64 processes);
# "none": the agent's own user, nothing dropped (only for apps that must manage the device).
sandbox = "standard"
# "kuksa-only": meant to reach the databroker only (not filtered yet: the host's network);
# "none": no network at all, not even loopback (so no databroker either); "full": any network.
network = "kuksa-only"
'''

MAIN = '''\
"""{name}: prints Vehicle.Speed as it changes, and flags speeds over SPEED_LIMIT_KMH (default 130).

`vehicle_signals` is the signal library the packager generates from [vss] in sdv-app.toml: it is
written into the package by `sdv package publish`, so it is not in this folder. Every line the app
prints is its console on the device (`sdv app logs DEVICE {name}`).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any


def describe(speed: float | None, limit_kmh: float) -> str:
    """One console line for a speed reading."""
    if speed is None:
        return "Vehicle.Speed: no value yet"
    over = " (over the limit)" if speed > limit_kmh else ""
    return f"Vehicle.Speed {{speed:.1f}} km/h{{over}}"


def say(line: str) -> None:
    print(line, flush=True)  # the agent reads stdout from a file: flush every line


async def watch(vehicle: Any, limit_kmh: float, out: Callable[[str], None] = say) -> None:
    """Every new value of Vehicle.Speed, as a line (the databroker sends the current one first)."""
    async for speed in vehicle.speed.subscribe():
        out(describe(speed, limit_kmh))


async def run(limit_kmh: float) -> None:
    from vehicle_signals import connect  # generated by the packager (see above)

    async with connect() as vehicle:
        say(f"{name}: watching Vehicle.Speed, limit {{limit_kmh:.0f}} km/h")
        await watch(vehicle, limit_kmh)


def main() -> None:
    limit = float(os.environ.get("SPEED_LIMIT_KMH", "130"))
    loop = asyncio.new_event_loop()
    task = loop.create_task(run(limit))
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # the agent stops apps with SIGTERM
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        say("{name}: stopped")
    finally:
        loop.close()


if __name__ == "__main__":
    main()
'''

TEST = '''\
"""{name}'s logic without a vehicle: `python -m unittest` in this folder."""

from __future__ import annotations

import asyncio
import unittest
from collections.abc import AsyncIterator

import main


class FakeSignal:
    """What the generated library's Signal offers the app: subscribe() yields each new value."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    async def subscribe(self) -> AsyncIterator[float]:
        for value in self.values:
            yield value


class FakeVehicle:
    def __init__(self, speeds: list[float]) -> None:
        self.speed = FakeSignal(speeds)


class WatchTest(unittest.TestCase):
    def test_every_speed_is_a_line_and_one_over_the_limit_is_flagged(self) -> None:
        lines: list[str] = []
        asyncio.run(main.watch(FakeVehicle([50.0, 140.5]), limit_kmh=130, out=lines.append))
        self.assertEqual(lines, ["Vehicle.Speed 50.0 km/h", "Vehicle.Speed 140.5 km/h (over the limit)"])

    def test_no_value_yet_is_said_as_such(self) -> None:
        self.assertEqual(main.describe(None, 130), "Vehicle.Speed: no value yet")


if __name__ == "__main__":
    unittest.main()
'''


def write_app(folder: Path, name: str) -> list[Path]:
    """Write the app into `folder` (created; it must not hold anything yet); the files written."""
    check_name(name)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise TemplateError(f"{folder} already exists and is not an empty folder: nothing written")
    folder.mkdir(parents=True, exist_ok=True)
    files = {MANIFEST_FILE: MANIFEST, "main.py": MAIN, "test_main.py": TEST}
    written = []
    for file_name, text in files.items():
        path = folder / file_name
        path.write_text(text.format(name=name))
        written.append(path)
    return written
