"""The SIMULATED runtime (simulation mode): a Runtime that runs nothing, with a predictable
failure plan. No servers, no processes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import psutil
import pytest

from sdv_edge_agent.adapters.simulated_runtime import (
    FIRST_PID,
    SIMULATED_CRASH,
    SIMULATED_LIMITS,
    FailurePlan,
    SimulatedRuntime,
    simulated_health_command,
)
from sdv_edge_agent.ports import RunSpec, Runtime, StdinUnavailable
from sdv_events.schemas.packages import PackageInfo


def spec(app: str = "speed", version: str = "1.0.0") -> RunSpec:
    # Paths that do not exist: the simulated runtime must not touch them.
    return RunSpec(app=app, version=version, argv=["/nonexistent/python", "-u", "main.py"],
                   cwd=Path("/nonexistent/app"), env={}, run_dir=Path("/nonexistent/run"),
                   memory_mb=128, cpu=0.5)


class Lines:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.offsets: dict[str, int] = {}

    def __call__(self, rows: list[tuple[str, float, str]], offsets: dict[str, int]) -> None:
        self.rows += [(stream, line) for stream, _, line in rows]
        self.offsets = offsets

    def of(self, stream: str) -> list[str]:
        return [line for s, line in self.rows if s == stream]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_it_is_a_runtime_named_for_what_it_is() -> None:
    runtime: Runtime = SimulatedRuntime("native", "sim-0000")
    assert runtime.name == "native"
    assert runtime.limits == SIMULATED_LIMITS == "simulated: nothing enforced"
    assert SimulatedRuntime("docker", "sim-0000").name == "docker"


async def test_lifecycle_start_console_stdin_pause_resume_stop() -> None:
    runtime = SimulatedRuntime("native", "sim-0000")
    children_before = psutil.Process().children(recursive=True)
    proc = await runtime.start(spec())
    other = await runtime.start(spec())
    assert proc.pid >= FIRST_PID
    assert other.pid != proc.pid
    assert not psutil.pid_exists(proc.pid)  # a made-up pid no real process can have
    assert psutil.Process().children(recursive=True) == children_before  # nothing spawned
    assert proc.alive()
    assert proc.exit_reason() is None
    assert runtime.usage(proc) is None  # nothing measured, nothing invented

    lines = Lines()
    follower = runtime.follow_output(spec(), proc, {}, lines)
    task = asyncio.create_task(follower.run())
    await settle()
    assert lines.of("stdout") == [f"simulated speed 1.0.0 pid {proc.pid} (native; no process: simulation mode)"]

    proc.write_stdin(b"hello\n")
    await settle()
    assert lines.of("stdout")[-1] == "echo: hello"

    runtime.pause(proc)
    proc.write_stdin(b"while paused\n")  # held, like bytes in a pipe nobody reads yet
    await settle()
    assert lines.of("stdout")[-1] == "echo: hello"
    runtime.resume(proc)
    await settle()
    assert lines.of("stdout")[-1] == "echo: while paused"

    runtime.pause(proc)  # a paused app still stops
    waiting = asyncio.create_task(proc.wait())
    assert await runtime.stop(proc, 3.0) == 0
    assert await waiting == 0
    await follower.finish()
    await asyncio.wait_for(task, 1)
    assert not proc.alive()
    assert proc.exit_reason() is None
    assert lines.offsets == {"stdout": 3, "stderr": 0}  # offsets count lines
    with pytest.raises(StdinUnavailable):
        proc.write_stdin(b"anyone?\n")
    assert other.alive()
    runtime.kill(other)
    assert await other.wait() == -signal.SIGKILL


async def test_nothing_outlives_the_simulator() -> None:
    runtime = SimulatedRuntime("native", "sim-0000")
    proc = await runtime.start(spec())
    assert runtime.adopt(spec(), proc.pid, proc.started) is None
    assert runtime.kill_orphan(proc.pid, proc.started) is False
    leftover = runtime.follow_output(spec(), None, {"stdout": 7}, Lines())
    await leftover.finish()  # an ended process of an earlier run left nothing to read


async def test_periodic_console_lines_when_asked_and_none_while_paused() -> None:
    runtime = SimulatedRuntime("native", "sim-0000", log_every_s=0.02)
    proc = await runtime.start(spec())
    lines = Lines()
    task = asyncio.create_task(runtime.follow_output(spec(), proc, {}, lines).run())
    await asyncio.sleep(0.15)
    ticks = [line for line in lines.of("stdout") if line.startswith("tick ")]
    assert ticks[:3] == ["tick 1", "tick 2", "tick 3"]
    runtime.pause(proc)
    await asyncio.sleep(0.03)
    frozen = len(lines.rows)
    await asyncio.sleep(0.1)
    assert len(lines.rows) == frozen
    await runtime.stop(proc, 1.0)
    await asyncio.wait_for(task, 1)


def test_failure_plan_is_a_seeded_share_of_devices_apps_and_versions() -> None:
    devices = [f"sim-{i:04d}" for i in range(1000)]
    plan = FailurePlan(rate=0.3, seed=7)
    failing = {d for d in devices if plan.fails(d, "speed", "2.0.0")}
    assert 250 < len(failing) < 350
    assert failing == {d for d in devices if FailurePlan(rate=0.3, seed=7).fails(d, "speed", "2.0.0")}
    assert failing != {d for d in devices if FailurePlan(rate=0.3, seed=8).fails(d, "speed", "2.0.0")}
    assert failing != {d for d in devices if plan.fails(d, "speed", "2.0.1")}
    assert not any(FailurePlan(rate=0.0).fails(d, "speed", "2.0.0") for d in devices)
    assert all(FailurePlan(rate=1.0).fails(d, "speed", "2.0.0") for d in devices)
    only_v2 = FailurePlan(rate=1.0, versions=("2.*",))
    assert only_v2.fails("sim-0000", "speed", "2.0.0")
    assert not only_v2.fails("sim-0000", "speed", "1.0.0")
    with pytest.raises(ValueError, match="between 0 and 1"):
        FailurePlan(rate=1.5)


async def test_exactly_the_predicted_devices_crash_before_any_health_window() -> None:
    plan = FailurePlan(rate=0.4, seed=42)
    devices = [f"sim-{i:04d}" for i in range(50)]
    predicted = {d for d in devices if plan.fails(d, "speed", "1.0.0")}
    assert 0 < len(predicted) < len(devices)
    runtimes = {d: SimulatedRuntime("native", d, failures=plan, crash_after_s=0.02) for d in devices}
    procs = {d: await runtimes[d].start(spec()) for d in devices}
    health = simulated_health_command(0.08)
    passed = await health(spec(), ["check"], 10.0)  # "passes" after the crash time, spawns nothing
    assert passed == (True, "")
    crashed = {d for d, p in procs.items() if not p.alive()}
    assert crashed == predicted
    for d in predicted:
        assert await procs[d].wait() == 1
        assert procs[d].exit_reason() == SIMULATED_CRASH
    lines = Lines()
    failing = next(iter(predicted))
    await runtimes[failing].follow_output(spec(), procs[failing], {}, lines).finish()
    assert lines.of("stderr") == ["simulated crash (failure plan: rate 0.4, seed 42)"]
    for d in set(devices) - predicted:
        await runtimes[d].stop(procs[d], 1.0)


async def test_install_time_and_cleanup_hooks_do_nothing(tmp_path: Path) -> None:
    runtime = SimulatedRuntime("docker", "sim-0000")
    package = PackageInfo(name="speed", version="1.0.0", digest="d", size=1, object_name="o",
                          manifest_digest="m", signature="s", key_id="k", channel="dev",
                          runtime="docker", entry_point="main.py", python_version="3.11")
    await runtime.prepare(package, tmp_path / "app")  # no image to build
    runtime.prune("speed", [package])
    runtime.release("speed")
    assert not (tmp_path / "app").exists()
