"""Where a running `sdv up` can be found: two files it writes into its data dir once it is up,
and removes when it stops.

- `<data-dir>/env`: `source` it in another shell and the `sdv` CLI talks to this suite (the NATS
  URL, the operator's credentials, the CA to pin, the dashboard's URL, and the CLI on the PATH);
- `<data-dir>/suite.json`: the same for programs (`sdv demo --data-dir`, tests, benchmarks), with
  the pid of `sdv up` (a file whose pid is gone describes a suite that is not running) and the
  local devices.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ENV_FILE = "env"
SUITE_FILE = "suite.json"


@dataclass(frozen=True)
class RunningSuite:
    pid: int
    data_dir: str
    nats_url: str
    nats_creds: str | None
    nats_ca: str | None
    monitor_url: str | None
    devices: list[str]
    selector: str

    @property
    def dashboard_url(self) -> str | None:
        return f"{self.monitor_url}/" if self.monitor_url else None

    def env(self) -> dict[str, str]:
        """The variables the CLI reads (sdv_client.cli_support, health)."""
        found = {"SDV_NATS_URL": self.nats_url, "SDV_NATS_CREDS": self.nats_creds or "",
                 "SDV_NATS_CA": self.nats_ca or "", "SDV_MONITOR_URL": self.monitor_url or ""}
        return {k: v for k, v in found.items() if v}


def write(suite: RunningSuite) -> Path:
    """Both files (owner-only: they name the operator's credentials); the env file's path."""
    data_dir = Path(suite.data_dir)
    lines = [f"# Written by `sdv up` (pid {suite.pid}). In another shell: source {data_dir / ENV_FILE}",
             *(f"export {k}={shlex.quote(v)}" for k, v in suite.env().items()),
             f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\""]
    _write_private(data_dir / SUITE_FILE, json.dumps(asdict(suite), indent=2) + "\n")
    return _write_private(data_dir / ENV_FILE, "\n".join(lines) + "\n")


def remove(data_dir: Path) -> None:
    for name in (ENV_FILE, SUITE_FILE):
        (data_dir / name).unlink(missing_ok=True)


def running(data_dir: Path) -> RunningSuite | None:
    """The suite `sdv up --data-dir <data_dir>` runs, if its process is alive."""
    try:
        suite = RunningSuite(**json.loads((data_dir / SUITE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    try:
        os.kill(suite.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return suite


def _write_private(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
    return path
