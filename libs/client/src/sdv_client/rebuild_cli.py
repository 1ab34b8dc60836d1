"""`sdv rebuild SERVICE READ_MODEL`: rebuild one of a service's read models from its PostgreSQL
store (`sdv.cmd.<service>.rebuild`); readers see the old model until the new one is swapped in."""

from __future__ import annotations

import contextlib

import typer
from nats.aio.client import Client as NatsClient

from sdv_client.cli_support import JsonOption, emit_json, out, run, user
from sdv_events.bus import CommandClient
from sdv_events.processing.admin import REBUILD_COMMAND, ReadModelRebuilt, RebuildReadModel


async def _rebuild(nc: NatsClient, service: str, consumer: str) -> ReadModelRebuilt:
    client = CommandClient(nc, actor=f"cli:{user()}", timeout=600.0)
    return await client.call(service, REBUILD_COMMAND, RebuildReadModel(consumer), ReadModelRebuilt)


def rebuild(
    service: str = typer.Argument(..., help="packager | registry | orchestrator | monitor"),
    read_model: str = typer.Argument(..., help="Its name, as `sdv ping --json` lists its tasks "
                                               "(e.g. rollout_catalog, desired_states)."),
    as_json: bool = JsonOption,
) -> None:
    """Rebuild a read model from the service's PostgreSQL store, then swap it in."""
    with out.status(f"rebuilding {service} {read_model} from PostgreSQL", spinner="dots") \
            if not as_json else contextlib.nullcontext():
        done = run(lambda nc: _rebuild(nc, service, read_model), as_json, service)
    if as_json:
        emit_json({"ok": True, "consumer": done.consumer, "events": done.events,
                   "applied": done.applied, "checkpoint": done.checkpoint,
                   "seconds": done.seconds})
        return
    out.print(f"{service} {done.consumer}: rebuilt from {done.events} event(s) in "
              f"{done.seconds:.1f}s; the bus takes over after sequence {done.checkpoint}")
