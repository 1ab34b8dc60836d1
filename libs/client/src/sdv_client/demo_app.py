"""The app `sdv demo` publishes: `hello-fleet`, a native app with no dependencies (nothing to
download, so it builds in a second anywhere), in two flavours.

- good: prints a hello with its device, version and pid, then a line every few seconds — what
  the console tail shows;
- broken (versions ending `-broken`): says so and exits with status 3 at once, before its health
  window ends. Every device fails it, so the canary fails and the rollout aborts and rolls back.
  (Simulated agents of `sdv up --simulate` fail `*-broken` versions too: local_agents.py.)
"""

from __future__ import annotations

from pathlib import Path

APP = "hello-fleet"
ALIVE_FOR_S = 2  # healthy once it ran this long: a wave takes a few seconds, not the default's

MANIFEST = """\
# The demo app of `sdv demo` (sdv_client/demo_app.py).
[app]
name = "{name}"
version = "{version}"
description = "Says hello from each device it runs on{broken}"
entry_point = "main.py"
runtime = "native"

[health]
alive_for_s = {alive_for_s}
"""

GOOD = """\
import os
import time

device = os.environ.get("SDV_DEVICE_ID", "?")
version = os.environ.get("SDV_APP_VERSION", "?")
print(f"hello from {device}: {app} {version} running (pid {os.getpid()})", flush=True)
for n in range(1, 1_000_000):
    time.sleep(5)
    print(f"{device}: {app} {version} still running after {n * 5}s", flush=True)
"""

BROKEN = """\
import os
import sys

device = os.environ.get("SDV_DEVICE_ID", "?")
version = os.environ.get("SDV_APP_VERSION", "?")
print(f"{device}: {app} {version} crashes at start, on purpose (exit 3)", flush=True)
sys.exit(3)
"""


def is_broken(version: str) -> bool:
    return version.endswith("-broken")


def write_app(root: Path, version: str) -> Path:
    """The app folder for `version` under `root` (broken when the version says so)."""
    folder = root / f"{APP}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    broken = is_broken(version)
    (folder / "sdv-app.toml").write_text(MANIFEST.format(
        name=APP, version=version, alive_for_s=ALIVE_FOR_S,
        broken=" (this version crashes at start, on purpose)" if broken else ""))
    (folder / "main.py").write_text((BROKEN if broken else GOOD).replace("{app}", APP))
    return folder
