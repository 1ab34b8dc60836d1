"""Taking an app back at agent start: its process still runs, or it ended while no agent ran.

Apps outlive the agent (an agent restart, update or crash leaves them running). At start the
agent re-adopts a process that is still alive and its own, without checking its health again if
it was healthy (so nothing it already reported is reported again). A process that ended while no
agent ran is a crash like any other: its exit status (when the runtime kept it) goes into an
`AppFailed` or a restart, counted by the crash-loop and rollback logic — a version on trial that
died is rolled back, not silently started again. A process that started before the machine last
booted ended with the previous boot (a shutdown or a power loss, not the app's doing): it is
started again, uncounted. A version staged for a later activation is checked again from the disk
(installed, its signed manifest verifying): then the wait goes on without a new download; if not,
it is staged again.
"""

from __future__ import annotations

import psutil
import structlog

from sdv_edge_agent.app_inbox import Vanished, describe_exit
from sdv_edge_agent.supervisor import AppSupervisor

log = structlog.get_logger("sdv.agent.app")


async def recover(supervisor: AppSupervisor) -> None:
    """Re-adopt the app's process if it is still alive and ours, or report how it ended. A
    hot-swap candidate of the previous agent run is killed: the swap is decided again."""
    agent, record = supervisor.agent, supervisor.record
    _check_staged(supervisor)
    if record.candidate is not None:
        for runtime in agent.runtimes.values():  # each checks the process is its own
            runtime.kill_orphan(*record.candidate)
        record.candidate = None
    if record.pid is None or record.pid_started is None or record.package is None:
        return
    app_log = log.bind(app=record.name, pid=record.pid)
    package = record.package
    if package.runtime not in agent.runtimes:
        # Its runtime did not come up with this agent (say, the Docker engine did not answer):
        # leave the process alone; reconcile reports the app FAILED with the reason.
        app_log.warning("runtime_unavailable", runtime=package.runtime)
        return
    runtime = agent.runtime_for(package)
    installed = agent.installer.installed(package)
    problem = agent.installer.signed_problem(package) if installed is not None else None
    if problem is not None or installed is None:
        # Not what was signed (the kept manifest or the description changed while the agent
        # was away), or gone from disk: not adopted; reconcile starts it again (or refuses it).
        app_log.warning("not_adopted", reason=problem or "its version is not installed any more")
        runtime.kill_orphan(record.pid, record.pid_started)
        record.pid = record.pid_started = None
        supervisor.save()
        return
    try:
        adopt = (record.pid, record.pid_started)
        supervisor.instance = await supervisor.launch(package, installed, adopt=adopt)
        app_log.info("re_adopted", state=record.state, healthy=record.healthy)
        return
    except (ProcessLookupError, OSError):
        pass
    spec = supervisor.spec_for(package, installed)
    code = runtime.last_exit(spec)  # before the leftovers are collected (a container is removed then)
    key = f"{record.name}/{spec.run_dir.name}"
    sink = agent.lines_sink(record.name, key)
    leftover = runtime.follow_output(spec, None, agent.store.tail_offsets(key), sink)
    await leftover.finish()  # its last console lines
    if not runtime.outlives_agent or record.pid_started < psutil.boot_time():
        # Its processes end with the agent (simulation) or the machine (it booted since): nothing
        # happened to the app itself; reconcile starts it again.
        app_log.info("process_ended_with_the_agent_or_the_machine", status=code)
        record.pid = record.pid_started = None
        supervisor.save()
        return
    reason = f"{describe_exit(code)} while no agent was running"
    app_log.warning("process_ended_while_no_agent_ran", reason=reason, on_trial=record.on_trial)
    # The pid stays recorded until the supervisor has handled the end: an agent that stops again
    # before finds the same end at its next start (and reports nothing twice: the same run).
    supervisor.post(Vanished(reason))


def _check_staged(supervisor: AppSupervisor) -> None:
    agent, record, staged = supervisor.agent, supervisor.record, supervisor.record.staged
    if staged is None:
        return
    problem = (agent.installer.signed_problem(staged) if agent.installer.installed(staged) is not None
               else "it is not installed any more")
    if problem is None:
        log.info("staged_version_kept", app=record.name, version=staged.version)
        return
    log.warning("staged_version_lost", app=record.name, version=staged.version, reason=problem)
    record.staged = None  # reconcile stages it again
    supervisor.save()
