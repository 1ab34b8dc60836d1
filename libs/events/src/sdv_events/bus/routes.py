"""Serving commands with FastStream: kept apart from rpc.py so that processes that only speak
nats-py (the edge agent) do not import FastStream at all."""

from __future__ import annotations

from faststream.nats import NatsMessage, NatsRouter

from sdv_events.bus.rpc import Handler, Req, serve_one
from sdv_events.subjects import command_subject


def register_command(
    router: NatsRouter, service: str, name: str, request_type: type[Req], handler: Handler[Req]
) -> None:
    """Serve `sdv.cmd.<service>.<name>` in the service's queue group (replicas share the load)."""
    subject = command_subject(service, name)

    @router.subscriber(subject, queue=f"sdv-{service}")
    async def _serve(msg: NatsMessage) -> bytes:
        return await serve_one(msg.body, subject, msg.headers or {}, request_type, handler)
