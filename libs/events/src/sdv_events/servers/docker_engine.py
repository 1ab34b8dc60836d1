"""A private Docker engine (Debian's `dockerd` + the containerd it manages), for tests and dev runs.

It shares nothing with a system engine: its own unix socket, data root, exec root, pid file and
an empty daemon config, no iptables rules and no bridge network (`--bridge=none`), so several can
run beside each other and beside a system dockerd. Containers get `none` or `host` networking
only. `stop()` shuts it down (dockerd stops its containers and its containerd) and makes sure no
process of it is left, including containerd shims of containers it could not stop.

The socket lives under a short directory in /tmp by default: unix socket paths are limited to
108 bytes and containerd puts its own socket below the exec root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from sdv_events.errors import SdvError

if TYPE_CHECKING:
    import docker

DOCKERD_CANDIDATES = ("dockerd", "/usr/sbin/dockerd", "/usr/bin/dockerd")
MAX_SOCKET_PATH = 100


class DockerUnavailable(SdvError):
    """No Docker engine can be used here; `reason` says why (and what to install or fix)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def dockerd_binary() -> str:
    for candidate in DOCKERD_CANDIDATES:
        found = shutil.which(candidate)
        if found is not None:
            return found
    raise DockerUnavailable("dockerd is not installed (Debian: apt-get install docker.io, "
                            "or run deploy/docker-engine-setup.sh)")


class DockerEngine:
    """Start/stop a real dockerd on a private socket. Use as a context manager."""

    def __init__(self, base_dir: Path | None = None, *, shutdown_timeout_s: int = 5) -> None:
        self._own_dir = base_dir is None
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="sdv-docker-", dir="/tmp"))
        self.shutdown_timeout_s = shutdown_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.base_dir / "docker.sock"

    @property
    def url(self) -> str:
        """What `DOCKER_HOST`, `docker -H` and `docker.DockerClient(base_url=...)` take."""
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "dockerd.log"

    def client(self, timeout: int = 60) -> docker.DockerClient:
        import docker

        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def start(self, timeout: float = 60.0) -> DockerEngine:
        """Raises DockerUnavailable (its reason holds the end of dockerd's log) after cleaning up."""
        try:
            self._start(timeout)
        except DockerUnavailable:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        binary = dockerd_binary()
        if os.geteuid() != 0:
            raise DockerUnavailable("dockerd needs root here (rootless Docker is not set up); "
                                    f"running as uid {os.geteuid()}")
        if len(str(self.base_dir / "exec" / "containerd" / "containerd.sock")) > MAX_SOCKET_PATH:
            raise DockerUnavailable(f"{self.base_dir} is too long a path for the engine's unix sockets")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "daemon.json"
        config.write_text(json.dumps({}))  # not /etc/docker/daemon.json: nothing of the host's setup
        args = [
            binary, "--host", self.url, "--config-file", str(config),
            "--data-root", str(self.base_dir / "data"), "--exec-root", str(self.base_dir / "exec"),
            "--pidfile", str(self.base_dir / "docker.pid"),
            "--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=overlay2",
            "--shutdown-timeout", str(self.shutdown_timeout_s),
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import docker

        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise DockerUnavailable(f"dockerd exited with status {self.process.returncode} during "
                                        f"start-up; its log ends:\n{self.log_tail()}")
            if self.socket_path.exists():
                try:
                    client = docker.DockerClient(base_url=self.url, timeout=2)
                    try:
                        if client.ping():
                            return
                    finally:
                        client.close()
                except docker.errors.DockerException as exc:
                    last = str(exc)
            time.sleep(0.05)
        raise DockerUnavailable(f"dockerd did not answer on {self.url} within {timeout:.0f}s ({last}); "
                                f"its log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, *, keep_data: bool = False) -> None:
        """Containers are stopped first (SIGTERM, SIGKILL after `shutdown_timeout_s`: dockerd's own
        shutdown would give each its stop timeout, 10 s by default), then SIGTERM lets dockerd stop
        its containerd; whatever is left after that (a hung shim) is killed, so no process of this
        engine remains."""
        if self.process is not None and self.process.poll() is None:
            self._stop_containers()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.shutdown_timeout_s + 20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._kill_leftovers()
        self.process = None
        self._unmount_leftovers()
        if self._own_dir and not keep_data:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _stop_containers(self) -> None:
        import docker

        try:
            client = docker.DockerClient(base_url=self.url, timeout=self.shutdown_timeout_s + 10)
            try:
                for summary in client.api.containers():
                    with contextlib.suppress(docker.errors.DockerException):
                        client.api.stop(summary["Id"], timeout=self.shutdown_timeout_s)
            finally:
                client.close()
        except docker.errors.DockerException:
            pass  # not answering: the signals below still end it

    def leftover_processes(self) -> list[int]:
        """Pids still alive of this engine's processes (dockerd; containerd and its shims, which
        name the exec root on their command line) and of everything they started (containers).
        Clients (`--docker-host unix://<dir>/docker.sock`) are not matched."""
        marker = str(self.base_dir / "exec").encode()
        own = {self.process.pid} if self.process is not None and self.process.poll() is None else set()
        parents: dict[int, int] = {}
        roots = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                if fields[0] == "Z":
                    continue
                parents[int(entry.name)] = int(fields[1])
                if int(entry.name) in own or marker in (entry / "cmdline").read_bytes():
                    roots.append(int(entry.name))
        found = set(roots)
        grew = True
        while grew:
            children = {pid for pid, parent in parents.items() if parent in found} - found
            found |= children
            grew = bool(children)
        return sorted(found)

    def _kill_leftovers(self) -> None:
        for pid in self.leftover_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.leftover_processes() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _unmount_leftovers(self) -> None:
        """Overlay and shm mounts of containers a killed engine could not clean up."""
        marker = str(self.base_dir) + "/"
        try:
            mounts = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return
        targets = sorted((line.split()[1] for line in mounts if line.split()[1].startswith(marker)),
                         key=len, reverse=True)
        for target in targets:
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    def __enter__(self) -> DockerEngine:
        return self.start()

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

