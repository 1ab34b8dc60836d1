"""The edge agents `sdv up` runs beside the suite, so a newcomer sees a fleet at once.

Real agents (`--agents N`, default 3: `car-1` … `car-N`): each a `python -m sdv_edge_agent`
process with its own data directory `<data-dir>/agents/<device-id>/`, the native runtime, and
nothing but what a vehicle is installed with — the NATS URL, the CA to pin and the enrolment
credentials. Simulated ones (`--simulate N`: `sim-0000` …) run in ONE `--simulate` process,
data under `<data-dir>/agents/simulated/`.

Admission is by pre-authorisation, the registry's per-device path: before the agents start,
`sdv up` pre-authorises each device id with the labels `fleet=local` and a token it made
(`<data-dir>/agents/token`, owner-only, reused by later runs), which the agents present with
their announce (SDV_AGENT_FLEET_TOKEN, in their environment, not on their command line). They are
accepted at once, labelled, with no operator step and no fleet-wide token the registry would
accept from anyone. Their signing keys they learn from the credentials the registry issues them
(`sdv_events.auth.suite_keys`); on servers `sdv up` did not make (SDV_NATS_URL) there are no
enrolment credentials and they are given the key files instead.

Apps outlive their agent by design (an agent restart must not stop the vehicle's apps), in
sessions of their own. So stopping the local fleet stops the agents, then every process still
running from under `<data-dir>/agents/` — the apps — by process group: SIGTERM, SIGKILL after a
grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as NatsClient

from sdv_client.children import ChildProcess, RestartPolicy
from sdv_events.bus import CommandClient, CommandError
from sdv_events.schemas.devices import DeviceView, PreauthorizeDevice

LABELS = {"fleet": "local"}
SELECTOR = "fleet=local"
AGENTS_DIR = "agents"
SIMULATED_DIR = "simulated"
SIM_PREFIX = "sim"
# What the demo's deliberately failing versions are called; simulated devices fail them too.
FAILING_VERSIONS = "*-broken"
APP_STOP_GRACE_S = 3.0


def simulated_ids(count: int) -> list[str]:
    """The ids `sdv-agent --simulate N --sim-prefix sim` gives its devices (its simulation.py)."""
    width = max(4, len(str(count - 1)))
    return [f"{SIM_PREFIX}-{i:0{width}d}" for i in range(count)]


@dataclass(frozen=True)
class AgentConnection:
    """What an agent is installed with."""

    nats_url: str
    nats_ca: str | None
    enrol_creds: str | None  # None: a NATS without per-device credentials
    packager_pub: Path  # given only where there are no enrolment credentials to learn them from
    orchestrator_pub: Path


class LocalAgents:
    def __init__(self, root: Path, *, real: int = 3, simulated: int = 0, heartbeat_s: float = 2.0,
                 policy: RestartPolicy | None = None) -> None:
        self.root = root
        self.real = real
        self.simulated = simulated
        self.heartbeat_s = heartbeat_s
        self.policy = policy
        self.children: list[ChildProcess] = []

    @property
    def device_ids(self) -> list[str]:
        return [f"car-{i}" for i in range(1, self.real + 1)] + simulated_ids(self.simulated)

    def token(self) -> str:
        path = self.root / "token"
        with contextlib.suppress(FileNotFoundError):
            return path.read_text().strip()
        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        return token

    def prepare(self) -> str | None:
        """The agents' directory: searchable by the sandboxed apps' own users (as /var/lib is on a
        device), listable by the agents' user only. A warning when a directory above it is not
        searchable by them (apps would not start)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        # What a killed earlier run left (no suite runs here now): its agents would share the data
        # dirs with the new ones. Their apps go too; the new agents start them again.
        stop_processes_under(self.root, APP_STOP_GRACE_S)
        if os.geteuid() != 0:
            return None  # apps run as the agents' own user: nothing to reach
        closed = [p for p in self.root.parents if not p.stat().st_mode & 0o001]
        if not closed:
            return None
        return (f"{closed[0]} is not searchable by other users: the agents' apps, which run as users of "
                f"their own, cannot start below it (chmod o+x it, or use another --data-dir)")

    async def preauthorize(self, nc: NatsClient) -> None:
        """Each device id with its labels and the token; ids known from an earlier run (already
        announced and accepted) are left as they are."""
        commands = CommandClient(nc, actor="sdv-up", timeout=10.0)
        token = self.token()
        gate = asyncio.Semaphore(32)

        async def one(device_id: str) -> None:
            async with gate:
                try:
                    await commands.call("registry", "preauthorize",
                                        PreauthorizeDevice(device_id, token, LABELS), DeviceView)
                except CommandError as err:
                    if err.code != "conflict":
                        raise

        await asyncio.gather(*(one(d) for d in self.device_ids))

    def build(self, connection: AgentConnection, env: dict[str, str]) -> list[ChildProcess]:
        common = [sys.executable, "-m", "sdv_edge_agent", "--nats-url", connection.nats_url]
        if connection.nats_ca:
            common += ["--nats-ca", connection.nats_ca]
        if connection.enrol_creds:
            common += ["--enrol", "--enrol-creds", connection.enrol_creds]
        else:  # no per-device credentials here, so no keys in them either
            common += ["--enrol", "--packager-key-file", str(connection.packager_pub),
                       "--orchestrator-key-file", str(connection.orchestrator_pub)]
        agent_env = {**env, "SDV_AGENT_FLEET_TOKEN": self.token(),
                     "SDV_AGENT_HEARTBEAT_S": f"{self.heartbeat_s:g}", "SDV_AGENT_STOP_TIMEOUT_S": "3"}
        for name in ("SDV_DEVICE_ID", "SDV_AGENT_DATA_DIR", "SDV_DATA_DIR", "SDV_NATS_CREDS",
                     "SDV_AGENT_NATS_CREDS", "SDV_AGENT_PACKAGER_KEY", "SDV_AGENT_ORCHESTRATOR_KEY"):
            agent_env.pop(name, None)
        self.children = [
            ChildProcess(f"agent {device_id}",
                         functools.partial(list, [*common, "--device-id", device_id,
                                                  "--data-dir", str(self.root / device_id)]),
                         functools.partial(dict, agent_env), self.root / f"{device_id}.log", self.policy,
                         stop_grace_s=10.0)
            for device_id in self.device_ids[:self.real]]
        if self.simulated:
            sim = [*common, "--simulate", str(self.simulated), "--sim-prefix", SIM_PREFIX,
                   "--data-dir", str(self.root / SIMULATED_DIR),
                   "--sim-failure-rate", "1", "--sim-fail-versions", FAILING_VERSIONS]
            self.children.append(ChildProcess("simulated agents", functools.partial(list, sim),
                                              functools.partial(dict, agent_env),
                                              self.root / "simulated.log", self.policy, stop_grace_s=15.0))
        return self.children

    def start(self) -> None:
        for child in self.children:
            child.start()

    def stop(self) -> None:
        """Agents first (all at once), then the apps they leave running."""
        for child in self.children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        stop_processes_under(self.root, APP_STOP_GRACE_S)


def _under(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if marker in cmdline:
            return True
        return os.readlink(f"/proc/{pid}/cwd").startswith(marker)
    except OSError:
        return False


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def processes_under(root: Path) -> list[int]:
    """Live processes whose command line names `root/…` or whose working directory lies in it
    (the apps: their interpreter is a venv there, their working directory their version's)."""
    marker = str(root) + "/"
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]
    return [pid for pid in pids if _under(pid, marker) and not _zombie(pid)]


def stop_processes_under(root: Path, grace_s: float) -> None:
    """SIGTERM to the process group of each process under `root`, SIGKILL what is left after
    `grace_s`."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        found = processes_under(root)
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                group = os.getpgid(pid)
                if group != os.getpgrp():  # never our own group
                    os.killpg(group, sig)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while processes_under(root) and time.monotonic() < deadline:
            time.sleep(0.05)
