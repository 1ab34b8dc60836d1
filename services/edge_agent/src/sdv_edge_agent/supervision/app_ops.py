"""Interactive ops on an app (pause, resume, stop, start, restart, stdin): an operator's word,
checked against the lifecycle, that holds the app in the state it asked for."""

from __future__ import annotations

from sdv_edge_agent.domain.lifecycle import LIVE, AppState, transition
from sdv_edge_agent.supervision import instances
from sdv_edge_agent.supervision.core import AppCore
from sdv_events.errors import DomainError

S = AppState


async def op(app: AppCore, op: str, data: bytes) -> None:
    state = app.record.state
    if state is None:
        raise OpRefused(f"{app.name} is not installed")
    desired = app.agent.desired_app(app.name)
    wants_running = desired is not None and desired.state == "running"
    if op == "pause":
        transition(app.name, state, S.PAUSED)
        app.record.held = "paused"
        instances.pause(app)
    elif op == "resume":
        transition(app.name, state, S.RUNNING)
        app.record.held = None if wants_running else "running"
        instances.resume(app)
    elif op == "stop":
        transition(app.name, state, S.STOPPED)
        app.record.held = "stopped"
        await instances.stop(app)
    elif op == "start":
        if state not in (S.INSTALLED, S.STOPPED, S.FAILED):
            raise OpRefused(f"{app.name} is {state.value}: only an installed, stopped or failed app "
                            "can be started (use restart)")
        transition(app.name, state, S.STARTING)
        app.record.held = None if wants_running else "running"
        app.record.crashes, app.record.failed_digest, app.record.failed_rollout = (), None, None
        await instances.start(app)
    elif op == "restart":
        if state in LIVE:
            await instances.stop(app)
        transition(app.name, app.record.state, S.STARTING)
        app.record.held = None if wants_running else "running"
        app.record.crashes, app.record.failed_digest, app.record.failed_rollout = (), None, None
        await instances.start(app)
    elif op == "stdin":
        if app.instance is None:
            raise OpRefused(f"{app.name} is {state.value}: no process to write to")
        try:
            app.instance.process.write_stdin(data)
        except Exception as exc:
            raise OpRefused(str(exc)) from None
    else:
        raise OpRefused(f"unknown op {op!r}")
    app.save()


class OpRefused(DomainError):
    """An op that cannot apply to the app as it is now (the reply's code is `op_refused`)."""

    code = "op_refused"
