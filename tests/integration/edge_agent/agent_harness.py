"""Test harness for the edge agent: real signed packages, a real NATS, real agent processes.

Loaded by path (tests/ is not a package): `conftest.py` here and tests/reliability/test_agent_*.py
use the same helpers. Nothing here fakes the agent: it runs as `python -m sdv_edge_agent`, reads
its desired state from KV, downloads artifacts from the object store, runs apps as processes.
The `Fleet` plays the orchestrator's part in KV with a key of its own: it signs every desired
document it writes (`sdv_events.desired_signing`), and its agents pin that key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import nats
import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from sdv_events.auth.client_tls import tls_options
from sdv_events.codec import decode_envelope
from sdv_events.desired_signing import DesiredSigner
from sdv_events.envelope import Envelope
from sdv_events.provisioning import DESIRED_BUCKET, PACKAGES_BUCKET, REPORTED_BUCKET, provision
from sdv_events.schemas.deployment import DesiredApp, DesiredState, ReportedState, RunState
from sdv_events.schemas.packages import PackageInfo
from sdv_packager.application import package_info
from sdv_packager.build.pipeline import build_package
from sdv_packager.build.wheels import WheelSource
from sdv_packager.domain.vss import VssCatalog
from sdv_packager.signing import Signer

MANIFEST = """\
[app]
name = "{name}"
version = "{version}"
entry_point = "main.py"
runtime = "{runtime}"
hot_swap = {hot_swap}
dependencies = {dependencies}

[resources]
memory = "{memory}"

[health]
alive_for_s = {alive_for}
{health_command}"""

# Prints a numbered, timestamped line every `TICK_S`, echoes stdin, stops cleanly on SIGTERM.
TICKER = """\
import os, signal, sys, threading, time

TICK_S = float(os.environ.get("TICK_S", "0.05"))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())

def say(text):  # one write per line: print() writes its pieces apart, and two threads print here
    sys.stdout.write(text + "\\n")
    sys.stdout.flush()

def echo():
    for line in sys.stdin:
        say("echo: " + line.rstrip())

threading.Thread(target=echo, daemon=True).start()
say(f"{banner} {{os.environ.get('SDV_APP_VERSION')}} {{os.getpid()}}")
n = 0
while not stop.is_set():
    n += 1
    say(f"tick {{n}} {{time.time():.6f}}")
    stop.wait(TICK_S)
say("bye")
"""


def ticker_source(banner: str = "ticker") -> str:
    return TICKER.format(banner=banner)


def catalog() -> VssCatalog:
    return VssCatalog.from_json((resources.files("sdv_packager") / "data" / "vss_catalog.json").read_bytes())


_CATALOG: VssCatalog | None = None


def make_app(root: Path, name: str, version: str, main: str, *, alive_for: float = 0.5,
             hot_swap: bool = False, memory: str = "128MB", dependencies: list[str] | None = None,
             files: dict[str, str] | None = None, runtime: str = "native",
             security: dict[str, str] | None = None, health_command: list[str] | None = None) -> Path:
    app = root / "src" / f"{name}-{version}-{abs(hash(main)) % 10**8}"
    app.mkdir(parents=True, exist_ok=True)
    (app / "sdv-app.toml").write_text(MANIFEST.format(
        name=name, version=version, hot_swap="true" if hot_swap else "false", memory=memory, runtime=runtime,
        alive_for=alive_for, dependencies=msgspec.json.encode(dependencies or []).decode(),
        health_command=f"command = {msgspec.json.encode(health_command).decode()}\n" if health_command else "",
    ) + ("\n[security]\n" + "".join(f'{k} = "{v}"\n' for k, v in security.items()) if security else ""))
    (app / "main.py").write_text(main)
    for rel, text in (files or {}).items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_text(text)
    return app


def kill_processes_under(path: Path) -> int:
    """Kill (by process group) every process started from below `path` — apps outlive agents."""
    killed = 0
    marker = str(path)
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if marker in cmd or (proc.info["cwd"] or "").startswith(marker):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(psutil.Error):
                    proc.kill()
                killed += 1
        except psutil.Error:
            continue
    return killed


def processes_under(path: Path) -> list[psutil.Process]:
    """App processes of the agent whose data directory is `path` (their interpreter lives there)."""
    marker = str(path / "apps")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def searchable_by_app_users(data_dir: Path) -> None:
    """Sandboxed apps run as users of their own: pytest's 0700 temporary directories above the
    agent's data directory must let them through (as /var/lib does on a device)."""
    for parent in data_dir.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o011)


@dataclass
class AgentProc:
    device_id: str
    data_dir: Path
    nats_url: str
    public_key: str
    orchestrator_key: str
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.device_id}-agent.log"

    def start(self) -> AgentProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        searchable_by_app_users(self.data_dir)
        env = {**os.environ, "SDV_LOG_LEVEL": "INFO", "SDV_AGENT_HEARTBEAT_S": "1",
               "SDV_AGENT_STOP_TIMEOUT_S": "3", "SDV_AGENT_DATABROKER": "127.0.0.1:1", **self.env}
        out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        # An empty key is not passed: the agent learns it from its credentials (--enrol).
        keys = [*(["--packager-key", self.public_key] if self.public_key else []),
                *(["--orchestrator-key", self.orchestrator_key] if self.orchestrator_key else [])]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sdv_edge_agent", "--device-id", self.device_id,
             "--nats-url", self.nats_url, "--data-dir", str(self.data_dir), *keys, *self.args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.close()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self) -> dict[str, dict[str, Any]]:
        db = sqlite3.connect(self.data_dir / "agent.db")
        try:
            return {name: msgspec.json.decode(raw) for name, raw in db.execute("SELECT name, record FROM apps")}
        finally:
            db.close()


@dataclass
class SimulatorProc:
    """`python -m sdv_edge_agent --simulate N`: N SIMULATED agents (real agent code, simulated
    runtime and installer) in ONE process, devices `<prefix>-0000`…, data under `<data_dir>/sim/`."""

    agents: int
    data_dir: Path
    nats_url: str
    public_key: str
    orchestrator_key: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    prefix: str = "sim"
    process: subprocess.Popen[bytes] | None = None

    @property
    def device_ids(self) -> list[str]:
        from sdv_edge_agent.simulation import device_ids

        return device_ids(self.prefix, self.agents)

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-simulator.log"

    def device_dir(self, device_id: str) -> Path:
        return self.data_dir / "sim" / device_id

    def start(self) -> SimulatorProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SDV_LOG_LEVEL": "INFO", "SDV_AGENT_HEARTBEAT_S": "1",
               "SDV_AGENT_DATABROKER": "127.0.0.1:1", **self.env}
        out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sdv_edge_agent", "--simulate", str(self.agents), "--sim-prefix", self.prefix,
             "--nats-url", self.nats_url, "--data-dir", str(self.data_dir), "--packager-key", self.public_key,
             "--orchestrator-key", self.orchestrator_key, *self.args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.close()
        return self

    def children(self) -> list[psutil.Process]:
        """Every process the simulator started (there must be none)."""
        assert self.process is not None
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the simulator ignored signal {sig} for {timeout}s") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class LogMsg:
    subject: str
    line: str
    headers: dict[str, str]
    received: float


class Fleet:
    """One test's cloud side: a NATS client, a packager key, an orchestrator key, fact and
    console collectors."""

    def __init__(self, nats_url: str, root: Path, creds: Path | None = None, ca: Path | None = None) -> None:
        self.nats_url = nats_url
        self.creds = creds
        self.ca = ca  # the CA to pin on a TLS server
        self.root = root
        self.signer = Signer(Ed25519PrivateKey.generate())
        self.orchestrator = DesiredSigner(Ed25519PrivateKey.generate())
        self.facts: list[Envelope] = []
        self.logs: list[LogMsg] = []
        self.agents: list[AgentProc] = []
        self.simulators: list[SimulatorProc] = []
        self.nc: NatsClient | None = None
        self._changed = asyncio.Event()

    async def open(self) -> Fleet:
        self.nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                                     user_credentials=str(self.creds) if self.creds else None,
                                     **tls_options(self.nats_url, self.ca))
        self.js = self.nc.jetstream()
        await provision(self.js)
        await self.nc.subscribe("sdv.evt.agent.>", cb=self._on_fact)
        await self.nc.subscribe("sdv.logs.>", cb=self._on_log)
        return self

    async def close(self) -> None:
        for agent in self.agents:
            agent.kill()
        for simulator in self.simulators:
            if simulator.process is not None and simulator.process.poll() is None:
                simulator.process.kill()
                simulator.process.wait(5)
        kill_processes_under(self.root)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), 3)

    async def _on_fact(self, msg: Msg) -> None:
        self.facts.append(decode_envelope(msg.data))
        self._changed.set()

    async def _on_log(self, msg: Msg) -> None:
        self.logs.append(LogMsg(msg.subject, msg.data.decode(), dict(msg.headers or {}), time.time()))
        self._changed.set()

    # --- packages and desired state ---------------------------------------------------------

    def build(self, app_dir: Path) -> tuple[PackageInfo, bytes]:
        global _CATALOG
        _CATALOG = _CATALOG or catalog()
        built = build_package(app_dir, _CATALOG, WheelSource(no_index=True))
        return package_info(built, self.signer), built.artifact

    async def put_artifact(self, name: str, artifact: bytes) -> None:
        store = await self.js.object_store(PACKAGES_BUCKET)
        await store.put(name, artifact)

    async def publish(self, app_dir: Path) -> PackageInfo:
        info, artifact = self.build(app_dir)
        await self.put_artifact(info.object_name, artifact)
        return info

    async def desire(self, device_id: str, revision: int,
                     apps: dict[str, PackageInfo | tuple[PackageInfo, RunState] | DesiredApp]) -> None:
        desired = {}
        for name, spec in apps.items():
            if isinstance(spec, DesiredApp):
                desired[name] = spec
            elif isinstance(spec, tuple):
                desired[name] = DesiredApp(package=spec[0], state=spec[1], rollout_id=f"r{revision}")
            else:
                desired[name] = DesiredApp(package=spec, rollout_id=f"r{revision}")
        await self.put_desired(device_id, self.orchestrator.sign(
            DesiredState(device_id=device_id, revision=revision, apps=desired)))

    async def put_desired(self, device_id: str, value: bytes) -> None:
        """Any bytes into the device's desired key: what whoever can write KV can do."""
        kv = await self.js.key_value(DESIRED_BUCKET)
        await kv.put(device_id, value)

    # --- agents ------------------------------------------------------------------------------

    def agent(self, device_id: str, args: list[str] | None = None, *, given_keys: bool = True,
              **env: str) -> AgentProc:
        """A real agent; without `given_keys` it learns the signing keys from its credentials."""
        agent = AgentProc(device_id, self.root / device_id, self.nats_url,
                          self.signer.public_key_b64 if given_keys else "",
                          self.orchestrator.public_key_b64 if given_keys else "", env, list(args or []))
        self.agents.append(agent)
        return agent.start()

    def simulator(self, agents: int, *args: str, prefix: str = "sim", **env: str) -> SimulatorProc:
        simulator = SimulatorProc(agents, self.root / f"{prefix}-fleet", self.nats_url,
                                  self.signer.public_key_b64, self.orchestrator.public_key_b64,
                                  list(args), env, prefix)
        self.simulators.append(simulator)
        return simulator.start()

    # --- observing ---------------------------------------------------------------------------

    async def until(self, check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.05)

    def fact_types(self, device_id: str, app: str | None = None) -> list[str]:
        return [f.type.split(".")[1] for f in self.facts  # DesiredRefused is about no app
                if f.data.device_id == device_id and (app is None or getattr(f.data, "app", None) == app)]

    def find_facts(self, device_id: str, kind: str, **match: Any) -> list[Envelope]:
        return [f for f in self.facts if f.data.device_id == device_id and f.type.split(".")[1] == kind
                and all(getattr(f.data, k, None) == v for k, v in match.items())]

    async def fact(self, device_id: str, kind: str, timeout: float = 15.0, **match: Any) -> Envelope:
        found = await self.until(lambda: self.find_facts(device_id, kind, **match), timeout,
                                 f"{kind} {match} from {device_id}")
        return found[-1]  # type: ignore[no-any-return]

    async def reported(self, device_id: str) -> ReportedState | None:
        try:
            raw = await self.js.get_last_msg(f"KV_{REPORTED_BUCKET}", f"$KV.{REPORTED_BUCKET}.{device_id}",
                                             direct=True)
        except nats.js.errors.NotFoundError:
            return None
        return msgspec.json.decode(raw.data, type=ReportedState)

    async def app_state(self, device_id: str, app: str) -> str | None:
        state = await self.reported(device_id)
        return state.apps[app].state if state and app in state.apps else None

    async def until_state(self, device_id: str, app: str, state: str, *, healthy: bool | None = None,
                          version: str | None = None, timeout: float = 30.0) -> Any:
        async def check() -> Any:
            rep = await self.reported(device_id)
            got = rep.apps.get(app) if rep else None
            ok = (got is not None and got.state == state and (healthy is None or got.healthy == healthy)
                  and (version is None or got.version == version))
            return got if ok else None

        return await self.until(check, timeout, f"{app} on {device_id} {state} (healthy={healthy}, {version})")

    def lines(self, device_id: str, app: str, stream: str = "stdout") -> list[str]:
        subject = f"sdv.logs.{device_id}.{app}.{stream}"
        return [m.line for m in self.logs if m.subject == subject]

    async def op(self, device_id: str, op: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        assert self.nc is not None
        msg = await self.nc.request(f"sdv.device.{device_id}.ops.{op}", msgspec.json.encode(body),
                                    timeout=timeout)
        return msgspec.json.decode(msg.data)  # type: ignore[no-any-return]


async def stream_messages(js: Any, stream: str, subject: str, timeout: float = 2.0) -> list[Msg]:
    """Every message a JetStream stream holds on `subject`, read with an ephemeral ordered consumer."""
    info = await js.stream_info(stream, subjects_filter=subject)
    expected = (info.state.subjects or {}).get(subject, 0)
    got: list[Msg] = []
    if expected == 0:
        return got
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    try:
        while len(got) < expected:
            got.append(await sub.next_msg(timeout))
    finally:
        await sub.unsubscribe()
    return got
