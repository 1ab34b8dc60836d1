"""The agent's application layer: desired state in, one supervisor per app, reports out.

`Agent` owns the app supervisors and everything they share: the SQLite store, the installer, the
runtime, the fact sink, the clock-free policies. It knows nothing of NATS: the composition root
hands it a download function and sinks, and feeds it desired documents and op requests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

import msgspec
import structlog

from sdv_edge_agent.adapters import sandbox
from sdv_edge_agent.adapters.middleware import DEFAULT_MQTT, vehicle_env
from sdv_edge_agent.adapters.packages import InstalledVersion, Installer
from sdv_edge_agent.adapters.store import AgentStore
from sdv_edge_agent.app_inbox import OpRequest, Poke
from sdv_edge_agent.domain.admission import admission_problem, valid_app_name
from sdv_edge_agent.domain.attribution import Cause, entry_causes
from sdv_edge_agent.domain.records import AppRecord
from sdv_edge_agent.domain.restarts import RestartPolicy
from sdv_edge_agent.ports import (
    NO_SANDBOX,
    HealthCommand,
    LinesSink,
    Process,
    RunsCommands,
    RunSpec,
    Runtime,
    Sandbox,
    VehicleSignals,
)
from sdv_edge_agent.projections import reported_state
from sdv_edge_agent.recovery import recover
from sdv_edge_agent.supervision.app_ops import OpRefused
from sdv_edge_agent.supervisor import AppSupervisor
from sdv_events.desired_signing import DesiredVerifier, UntrustedDesired
from sdv_events.package_format import sha256_hex
from sdv_events.schemas.agent import AppFact, AppFailed, DesiredRefused
from sdv_events.schemas.deployment import DesiredApp, DesiredState, ReportedApp, ReportedState
from sdv_events.schemas.packages import PackageInfo

log = structlog.get_logger("sdv.agent")


class Refusal(msgspec.Struct, frozen=True):
    """A desired entry the agent refused before touching anything for it."""

    version: str
    digest: str
    reason: str


REFUSED_META = "refused"
CAUSES_META = "causes"


class RuntimeUnavailable(OSError):
    """A package's runtime is not on this device (say, its Docker engine did not answer at start)."""


class Facts(Protocol):
    def emit(self, fact: AppFact | DesiredRefused, occurrence: int = 0, run: int | None = None) -> bool: ...


@dataclass(frozen=True)
class AgentOptions:
    device_id: str
    data_dir: Path
    agent_version: str = "0.1.0"
    stop_timeout_s: float = 10.0
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    monitor_interval_s: float = 1.0
    base_path: str = "/usr/local/bin:/usr/bin:/bin"


class Agent:
    def __init__(
        self,
        options: AgentOptions,
        *,
        store: AgentStore,
        installer: Installer,
        runtimes: Runtime | list[Runtime],
        facts: Facts,
        download: Callable[[PackageInfo], Awaitable[bytes]],
        databroker: Callable[[], tuple[str, int]],
        signals: VehicleSignals,
        desired_verifier: DesiredVerifier,
        on_change: Callable[[], None] = lambda: None,
        on_logs: Callable[[], None] = lambda: None,
        health_command: HealthCommand | None = None,
        mqtt: Callable[[], tuple[str, int]] = lambda: DEFAULT_MQTT,
    ) -> None:
        self.options = options
        self.mqtt = mqtt
        self.device_id = options.device_id
        self.stop_timeout_s = options.stop_timeout_s
        self.restart_policy = options.restart_policy
        self.store = store
        self.installer = installer
        listed = runtimes if isinstance(runtimes, list) else [runtimes]
        self.runtimes: dict[str, Runtime] = {runtime.name: runtime for runtime in listed}
        self.facts = RepeatCounting(facts, store)
        self.download = download
        self.databroker = databroker
        self.signals = signals  # activation gates are judged on these
        self.desired_verifier = desired_verifier
        self.on_change = on_change
        self.on_logs = on_logs
        self._health_command = health_command or self.run_health_process
        self.python_version = installer.python_version
        self.desired: DesiredState | None = None
        # What caused each desired entry (rollout, revision): what the app's facts carry.
        self.causes: dict[str, Cause] = {}
        # Desired entries refused at admission (key → why), reported as FAILED; see on_desired.
        self.refused: dict[str, Refusal] = {}
        # The desired document refused last (why, and the sha256 of its bytes), until one is
        # accepted again; see receive_desired.
        self.desired_refused: str | None = None
        self._refused_digest: str | None = None
        self.supervisors: dict[str, AppSupervisor] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # --- start-up ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load state from SQLite, re-adopt live processes, then reconcile every known app."""
        self.desired = self.store.load_desired()
        raw = self.store.get_meta(REFUSED_META)
        if raw is not None:
            self.refused = msgspec.json.decode(raw, type=dict[str, Refusal])
        raw = self.store.get_meta(CAUSES_META)
        if raw is not None:
            self.causes = msgspec.json.decode(raw, type=dict[str, Cause])
        for record in self.store.load_apps():
            supervisor = self._supervisor(record.name, record)
            await recover(supervisor)
        for supervisor in self.supervisors.values():
            supervisor.post(Poke())
        self._tasks.append(asyncio.create_task(self._monitor()))
        log.info("agent_started", device_id=self.device_id, apps=sorted(self.supervisors),
                 desired_revision=self.revision, limits=self.limits)

    @property
    def limits(self) -> str:
        """How each runtime enforces memory/cpu limits here, for people (logs, heartbeats)."""
        return "; ".join(f"{name}: {runtime.limits}" for name, runtime in sorted(self.runtimes.items()))

    def runtime_for(self, package: PackageInfo) -> Runtime:
        runtime = self.runtimes.get(package.runtime)
        if runtime is None:
            raise RuntimeUnavailable(f"the {package.runtime} runtime is not available on this device "
                                     f"(it runs {', '.join(sorted(self.runtimes))})")
        return runtime

    def _supervisor(self, name: str, record: AppRecord | None = None) -> AppSupervisor:
        supervisor = self.supervisors.get(name)
        if supervisor is None:
            supervisor = self.supervisors[name] = AppSupervisor(self, record or AppRecord(name=name))
            self._tasks.append(asyncio.create_task(supervisor.run(), name=f"app:{name}"))
        return supervisor

    async def close(self) -> None:
        """Stop supervising; the apps keep running (the next agent run re-adopts them)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for supervisor in self.supervisors.values():
            supervisor.activation.stop()
            for instance in (supervisor.instance, supervisor.candidate):
                if instance is not None:
                    instance.cancel_tasks()
                    await instance.follower.finish()

    # --- desired state -------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self.desired.revision if self.desired else 0

    def desired_app(self, name: str) -> DesiredApp | None:
        return self.desired.apps.get(name) if self.desired else None

    def desired_rollout(self, name: str) -> str | None:
        app = self.desired_app(name)
        return app.rollout_id if app else None

    def cause_of(self, name: str) -> Cause | None:
        """The rollout and revision that caused the app's desired entry (None: no entry)."""
        app = self.desired_app(name)
        if app is None:
            return None
        # A document accepted before causes were kept: its entries date from its revision.
        return self.causes.get(name) or Cause(app.rollout_id, self.revision)

    def receive_desired(self, raw: bytes) -> None:
        """The value of this device's desired key, as read from KV: acted on only if the
        orchestrator key this agent pins signed it, for this device, with a revision not older
        than the newest accepted (persisted in SQLite, so a restart does not reopen the door to
        an old document written back). Anything else is refused: logged with its cause,
        reported (a `DesiredRefused` fact, `desired_refused` in the reported state), and what
        runs keeps running. The same document again (redelivery, resync) changes nothing."""
        try:
            desired = self.desired_verifier.accept(raw, device_id=self.device_id,
                                                   accepted_revision=self.revision)
        except UntrustedDesired as refusal:
            self._refuse_document(raw, refusal)
            return
        if desired is not None:
            self.on_desired(desired)
        elif self.desired_refused is not None:  # the key holds the accepted document again
            self.desired_refused = self._refused_digest = None
            self.changed()

    def _refuse_document(self, raw: bytes, refusal: UntrustedDesired) -> None:
        digest = sha256_hex(raw)
        if digest == self._refused_digest:
            return  # the same bytes again (every resync): refused and reported once
        self._refused_digest = digest
        self.desired_refused = f"{refusal.cause}: {refusal}"
        log.error("desired_document_refused", cause=refusal.cause, reason=str(refusal),
                  revision=refusal.revision, accepted_revision=self.revision, digest=digest[:16])
        self.facts.emit(DesiredRefused(
            device_id=self.device_id, cause=refusal.cause, reason=str(refusal),
            revision=refusal.revision, accepted_revision=self.revision, digest=digest))
        self.changed()

    def on_desired(self, desired: DesiredState) -> None:
        """A verified desired document (see receive_desired): newer revisions replace the
        current one, older or equal ones are dropped (redelivery, reordering, a stale resync)."""
        if desired.device_id != self.device_id or desired.revision <= self.revision:
            return
        old = self.desired
        self.desired_refused = self._refused_digest = None
        desired = self._admit(desired, old)
        self.causes = entry_causes(old, desired, self.causes)
        self.desired = desired
        self.store.save_desired(desired)
        self.store.set_meta(CAUSES_META, msgspec.json.encode(self.causes))
        log.info("desired_state", revision=desired.revision, apps=sorted(desired.apps))
        for name in set(desired.apps) | set(self.supervisors):
            supervisor = self._supervisor(name)
            before = old.apps.get(name) if old else None
            if before != desired.apps.get(name) and supervisor.record.held is not None:
                supervisor.record.held = None  # an operator's hold lasts until the desired app changes
                self.store.save_app(supervisor.record)
            supervisor.post(Poke())
        self.changed()

    def _admit(self, desired: DesiredState, old: DesiredState | None) -> DesiredState:
        """The document without the entries admission refuses (an app key that is not the signed
        package name, config setting loader variables, …): nothing is created, written or started
        for them — no supervisor, no directory, no console. A refused key that names an app
        already here keeps that app's previous entry (it stays as it is). Each refusal is
        reported: an `AppFailed` fact (stage `admission`) and FAILED in the reported state."""
        apps: dict[str, DesiredApp] = {}
        refused: dict[str, Refusal] = {}
        for key, app in desired.apps.items():
            problem = admission_problem(key, app)
            if problem is None:
                apps[key] = app
                continue
            refused[key] = Refusal(app.package.version, app.package.digest, problem)
            kept = old.apps.get(key) if old is not None and valid_app_name(key) else None
            if kept is not None:
                apps[key] = kept
            log.warning("desired_entry_refused", app=key[:80], reason=problem, revision=desired.revision)
            self.facts.emit(AppFailed(
                device_id=self.device_id, app=key[:128], version=app.package.version,
                digest=app.package.digest, desired_revision=desired.revision,
                rollout_id=app.rollout_id, reason=problem, stage="admission",
            ))
        self.refused = refused
        self.store.set_meta(REFUSED_META, msgspec.json.encode(refused))
        return msgspec.structs.replace(desired, apps=apps)

    # --- ops -----------------------------------------------------------------------------------

    async def op(self, app: str, op: str, data: bytes = b"") -> AppRecord:
        supervisor = self.supervisors.get(app)
        if supervisor is None or supervisor.record.state is None:
            raise OpRefused(f"no app {app!r} on device {self.device_id}", code="not_found")
        reply: asyncio.Future[AppRecord] = asyncio.get_running_loop().create_future()
        supervisor.post(OpRequest(op, data, reply))
        return await reply

    # --- what supervisors use ------------------------------------------------------------------

    def changed(self) -> None:
        self.on_change()

    def reported(self) -> ReportedState:
        state = reported_state(
            self.device_id, self.revision, (s.record for s in self.supervisors.values()),
            agent_version=self.options.agent_version, now=datetime.now(UTC),
        )
        if self.desired_refused is not None:
            state = msgspec.structs.replace(state, desired_refused=self.desired_refused)
        if not self.refused:
            return state
        apps = dict(state.apps)
        for key, refusal in self.refused.items():
            error = f"{refusal.version}: admission: {refusal.reason}"
            here = apps.get(key)
            apps[key] = (msgspec.structs.replace(here, last_error=error) if here is not None else
                         ReportedApp(name=key, version=refusal.version, digest=refusal.digest,
                                     state="FAILED", last_error=error))
        return msgspec.structs.replace(state, apps=apps)

    def app_path(self, kind: str, app: str) -> Path:
        """`<data dir>/<kind>/<app>`: only for a valid app name (admission refuses the others
        before any of this runs; this is the last line, should a path ever get here another way)."""
        if not valid_app_name(app):
            raise ValueError(f"{app[:80]!r} is not a valid app name: not used as a path")
        return self.options.data_dir / kind / app

    def run_dir(self, app: str, package: PackageInfo) -> Path:
        return self.app_path("run", app) / f"{package.version}-{package.digest[:12]}"

    def remove_app_files(self, app: str) -> None:
        """Everything of the app on disk: versions, venvs, console files, its HOME, its /tmp."""
        if not valid_app_name(app):
            log.error("remove_refused_invalid_name", app=app[:80])
            return
        self.installer.remove_app(app)
        for kind in ("run", "home", "tmp"):
            shutil.rmtree(self.app_path(kind, app), ignore_errors=True)
        for runtime in self.runtimes.values():
            runtime.release(app)

    def prune_versions(self, app: str, keep: list[PackageInfo]) -> None:
        """Keep the active and the previous version (rollback) on disk, nothing older."""
        self.installer.prune(app, keep)
        for runtime in self.runtimes.values():
            runtime.prune(app, keep)
        runs = self.app_path("run", app)
        if runs.is_dir():
            wanted = {self.run_dir(app, p).name for p in keep}
            for child in runs.iterdir():
                if child.name not in wanted:
                    shutil.rmtree(child, ignore_errors=True)

    def lines_sink(self, app: str, tail_key: str) -> LinesSink:
        def sink(rows: list[tuple[str, float, str]], offsets: dict[str, int]) -> None:
            self.store.add_logs(app, rows, tail_key, offsets)
            self.on_logs()

        return sink

    def sandbox_for(self, package: PackageInfo) -> Sandbox:
        """The package's `security` on this device: a user of its own where the agent may switch
        users (root), else the agent's user; network=none as an empty network namespace."""
        level = package.security.sandbox
        if package.runtime != "native":
            return NO_SANDBOX  # a container is its own sandbox
        no_network = package.security.network == "none" and sandbox.can_switch_users()
        if level == "none" or not sandbox.can_switch_users():
            return Sandbox(level, no_network=no_network)
        key = f"uid:{package.name}"
        raw = self.store.get_meta(key)
        # Allocated once per name and kept; past the range's end: UidsExhausted (the start fails).
        uid = int(raw) if raw is not None else sandbox.app_uid(self.store.next_counter("app_uid"))
        if raw is None:
            self.store.set_meta(key, str(uid).encode())
        visible = [self.options.data_dir, Path(os.path.realpath(self.installer.python)).parent.parent]
        binds = sandbox.private_tmp_binds(self.app_path("tmp", package.name), visible)
        return Sandbox(level, uid, uid, no_network=package.security.network == "none", binds=binds)

    def app_tmpdir(self, app: str, owner: Sandbox) -> str | None:
        """TMPDIR for the app: /tmp where it is its own (mount namespace), else, for a confined app
        of an agent that cannot mount, a directory of its own (advice apps may ignore); an app
        with sandbox "none" shares the system's."""
        if owner.binds:
            return "/tmp"
        if not owner.confined:
            return None
        tmp = self.app_path("tmp", app) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return str(tmp)

    def app_home(self, app: str, owner: Sandbox) -> Path:
        """The app's one writable directory (HOME), owned by the user it runs as."""
        home = self.app_path("home", app)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if owner.uid is not None and owner.gid is not None:
            # HOME itself only: its parent is the agent's, so the app cannot swap it for a link,
            # while anything inside is the app's to arrange (a recursive chown by root would
            # follow links the app planted there). The uid stays the app's for life.
            os.lchown(home, owner.uid, owner.gid)
        return home

    def app_env(self, record: AppRecord, package: PackageInfo, installed: InstalledVersion) -> dict[str, str]:
        venv = installed.root / "venv"
        owner = self.sandbox_for(package)
        home = self.app_home(record.name, owner)
        tmpdir = self.app_tmpdir(record.name, owner)
        return {
            **record.config,  # admission refused loader and agent-owned variables in it
            **({"TMPDIR": tmpdir} if tmpdir else {}),
            "PATH": f"{venv / 'bin'}:{self.options.base_path}",
            "VIRTUAL_ENV": str(venv),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SDV_DEVICE_ID": self.device_id,
            "SDV_APP_NAME": record.name,
            "SDV_APP_VERSION": package.version,
            **vehicle_env(self.databroker(), self.mqtt()),
        }

    async def run_health_command(
        self, spec: RunSpec, command: list[str], timeout_s: float, process: Process | None = None
    ) -> tuple[bool, str]:
        """The package's health command: inside the app's container for a process that runs
        commands itself, else as the agent was told to run it (a host process; simulation: none)."""
        if isinstance(process, RunsCommands):
            return await self._health_inside(process, command, timeout_s)
        return await self._health_command(spec, command, timeout_s)

    async def _health_inside(self, process: RunsCommands, command: list[str],
                             timeout_s: float) -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        reason = "no result"
        while loop.time() < deadline:
            code, err = await process.run_command(command, max(0.1, deadline - loop.time()))
            if code == 0:
                return True, ""
            reason = "timed out" if code is None else f"exit {code}: {err}"
            await asyncio.sleep(0.5)
        return False, f"health command {' '.join(command)}: {reason}"

    async def run_health_process(
        self, spec: RunSpec, command: list[str], timeout_s: float
    ) -> tuple[bool, str]:
        """Run the package's health command on the host, as confined as the app, until it
        succeeds or `timeout_s` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        reason = "no result"
        while loop.time() < deadline:
            try:
                proc = await asyncio.create_subprocess_exec(  # as confined as the app itself
                    *command, cwd=spec.cwd, env=spec.env, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE, preexec_fn=partial(sandbox.confine, spec.sandbox),
                )
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    _, err = await proc.communicate()
                if proc.returncode == 0:
                    return True, ""
                reason = f"exit {proc.returncode}: {err.decode(errors='replace').strip()[-200:]}"
            except TimeoutError:
                proc.kill()
                reason = "timed out"
            except (OSError, subprocess.SubprocessError) as exc:  # the latter: sandbox setup failed
                reason = str(exc)
            await asyncio.sleep(0.5)
        return False, f"health command {' '.join(command)}: {reason}"

    # --- monitoring ----------------------------------------------------------------------------

    async def _monitor(self) -> None:
        """Sample usage of every app process, and enforce memory limits where nothing else does."""
        while True:
            await asyncio.sleep(self.options.monitor_interval_s)
            for supervisor in list(self.supervisors.values()):
                try:
                    supervisor.check_memory()
                except Exception:
                    log.exception("monitor_failed", app=supervisor.name)


class RepeatCounting:
    """Facts that may truly happen more than once per (app, digest, revision) — pauses, stops,
    refusals — get an occurrence number from a persisted counter; install, uninstall and
    already-current facts are once-only, so re-running an interrupted step after an agent crash
    reports nothing twice. A fact about one run of the app (its start, health, failure) comes
    with that run's number, so the same run reports each of them once, whatever restarts."""

    ONCE = frozenset({"AppDownloadStarted", "AppInstalled", "AppUninstalled", "AppAlreadyCurrent",
                      "AppStaged"})

    def __init__(self, inner: Facts, store: AgentStore) -> None:
        self.inner = inner
        self.store = store

    def emit(self, fact: AppFact | DesiredRefused, run: int | None = None) -> bool:
        kind = type(fact).__name__
        occurrence = 0
        if run is None and isinstance(fact, AppFact) and kind not in self.ONCE:
            key = f"occ:{fact.app}:{fact.digest[:16]}:{fact.desired_revision}:{kind}"
            occurrence = self.store.next_counter(key) - 1
        return self.inner.emit(fact, occurrence, run)
