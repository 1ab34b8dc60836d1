"""SIMULATION mode, `sdv-agent --simulate N`: N edge agents in one process, for scale tests of the
control plane (registry, orchestrator, monitor, NATS) without N vehicles.

Each simulated device is a full agent built by `app.build_agent`, the code a vehicle runs: its
own SQLite store (`<data_dir>/sim/<device-id>/`), its own NATS connection and inbox (its own
credentials when `--enrol` is given, else the shared ones), desired-state watch, reconcile loop
and supervisors, fact outbox, reported-state writer, console shipper, ops server and heartbeat.
Only two things are simulated: the runtime (`SimulatedRuntime`: no app process, a fake pid, a
configurable failure plan) and the installer (`SimulatedInstaller`: real download and
verification, no venv). One KUKSA lookup serves all: they share a host.

Agents start at most `START_CONCURRENCY` at a time (each holds its slot until connected, or for
`CONNECT_WAIT_S`), and their periodic work is spread over its period (`phase`), so N agents do
not heartbeat in one burst. SIGTERM stops them all; a failed background task of any one stops
the whole simulation with exit status 1, loudly, as a real agent would exit.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from sdv_edge_agent.adapters.kuksa import Databroker
from sdv_edge_agent.adapters.simulated_installer import SimulatedInstaller, VerifiedArtifacts
from sdv_edge_agent.adapters.simulated_runtime import (
    SIMULATED_LIMITS,
    FailurePlan,
    SimulatedRuntime,
    simulated_health_command,
)
from sdv_edge_agent.app import AgentParts, agent_version, build_agent, handle_signals, start_agent
from sdv_edge_agent.ports import Runtime
from sdv_edge_agent.settings import AgentSettings, SimulationSettings, key_list

log = structlog.get_logger("sdv.agent.simulation")
RUNTIME_NAMES = ("native", "docker")  # every runtime a package may ask for
START_CONCURRENCY = 50
CONNECT_WAIT_S = 5.0
CRASH_AFTER_S = 0.05  # a failing version dies this long after each start
FDS_PER_AGENT = 6  # SQLite (db, wal, shm), the NATS socket, an enrolment socket, spare


class SimulationFailed(Exception):
    """An agent of the simulation could not be built or started."""


def device_ids(prefix: str, count: int) -> list[str]:
    width = max(4, len(str(count - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def raise_open_files_limit(agents: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = agents * FDS_PER_AGENT + 256
    if soft >= wanted:
        return
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new < wanted:
        log.warning("open_files_limit_low", limit=new, wanted=wanted, agents=agents)


@dataclass
class Simulation:
    settings: AgentSettings
    sim: SimulationSettings
    stop: asyncio.Event
    databroker: Databroker
    verified: VerifiedArtifacts = field(default_factory=VerifiedArtifacts)
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(START_CONCURRENCY))
    parts: dict[str, AgentParts] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # device id → what failed

    @property
    def root(self) -> Path:
        return self.settings.data_dir / "sim"

    def runtimes(self, device_id: str) -> list[Runtime]:
        failures = FailurePlan(self.sim.failure_rate, self.sim.seed, self.sim.fail_versions)
        return [SimulatedRuntime(name, device_id, failures=failures, crash_after_s=CRASH_AFTER_S,
                                 log_every_s=self.sim.log_every_s) for name in RUNTIME_NAMES]

    def build(self, index: int, device_id: str) -> AgentParts:
        settings = replace(self.settings, device_id=device_id, data_dir=self.root / device_id,
                           simulation=None)
        return build_agent(
            settings, runtimes=self.runtimes(device_id), databroker=self.databroker,
            installer=SimulatedInstaller(settings.data_dir / "apps", key_list(settings.packager_public_key),
                                         self.verified),
            agent_version=f"{agent_version()}+simulated",
            health_command=simulated_health_command(CRASH_AFTER_S * 4),
            phase=index / self.sim.agents,
        )

    async def run_one(self, index: int, device_id: str) -> None:
        structlog.contextvars.bind_contextvars(device_id=device_id)
        async with self.gate:
            if self.stop.is_set():
                return
            try:
                parts = self.parts[device_id] = self.build(index, device_id)
                running = await start_agent(parts)
            except Exception as exc:
                log.exception("simulated_agent_start_failed")
                self.failed[device_id] = f"start: {type(exc).__name__}: {exc}"
                self.stop.set()
                return
            stopping = asyncio.create_task(self.stop.wait())
            connected = asyncio.create_task(parts.link.connected.wait())
            await asyncio.wait([stopping, connected], timeout=CONNECT_WAIT_S,
                               return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            connected.cancel()
        failed = await running.until_stopped(self.stop)
        if failed is not None:
            self.failed[device_id] = failed
            log.error("simulated_agent_failed", task=failed)
            self.stop.set()
        await running.shutdown()

    def counts(self) -> tuple[int, int]:
        return len(self.parts), sum(p.link.connected.is_set() for p in self.parts.values())

    async def report_progress(self, began: float) -> None:
        """Start-up progress every second until every agent is connected, then one line."""
        last = (-1, -1)
        while not self.stop.is_set():
            started, connected = self.counts()
            if connected == self.sim.agents:
                log.info("simulation_ready", agents=self.sim.agents,
                         took_s=round(time.monotonic() - began, 2))
                return
            if (started, connected) != last:
                log.info("simulation_starting", started=started, connected=connected, agents=self.sim.agents,
                         elapsed_s=round(time.monotonic() - began, 1))
                last = (started, connected)
            await asyncio.sleep(1.0)


async def simulate(settings: AgentSettings, stop: asyncio.Event | None = None) -> int:
    """Run `settings.simulation.agents` simulated agents until `stop` (or SIGTERM); the exit status."""
    sim = settings.simulation
    if sim is None:
        raise SimulationFailed("simulate() needs settings.simulation")
    stop = stop or asyncio.Event()
    ids = device_ids(sim.prefix, sim.agents)
    structlog.contextvars.bind_contextvars(simulation=True)
    log.warning("SIMULATION_MODE", agents=sim.agents, devices=f"{ids[0]} … {ids[-1]}",
                runtime=f"SimulatedRuntime for {', '.join(RUNTIME_NAMES)} ({SIMULATED_LIMITS}; "
                        "no app process is spawned)",
                failure_rate=sim.failure_rate, fail_versions=",".join(sim.fail_versions), seed=sim.seed,
                data_dir=str(settings.data_dir / "sim"))
    raise_open_files_limit(sim.agents)
    run = Simulation(settings, sim, stop, Databroker(settings.databroker))
    handle_signals(stop)
    began = time.monotonic()
    background = [asyncio.create_task(run.databroker.watch(), name="databroker"),
                  asyncio.create_task(run.report_progress(began), name="progress")]
    agents = [asyncio.create_task(run.run_one(i, device_id), name=f"sim:{device_id}")
              for i, device_id in enumerate(ids)]
    await asyncio.gather(*agents)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    log.info("simulation_stopped", agents=sim.agents, failed=run.failed or None,
             artifacts_verified=run.verified.full_checks, verifications_reused=run.verified.reused)
    return 1 if run.failed else 0
