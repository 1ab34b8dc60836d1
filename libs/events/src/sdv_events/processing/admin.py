"""`sdv.cmd.<service>.rebuild`: an operator rebuilds one of a service's read models from its
PostgreSQL store (`ConsumerRunner.rebuild("store")`: into a shadow schema swapped in at the end,
so readers never see half a model). Served by every service for the consumers it runs."""

from __future__ import annotations

import time
from collections.abc import Mapping

import msgspec
import structlog
from nats.aio.client import Client as NatsClient

from sdv_events.bus import Conflict, InvalidRequest, NotFound, RequestInfo
from sdv_events.bus.rpc import Handler
from sdv_events.processing.rebuild import ConsumerBusy
from sdv_events.processing.runner import ConsumerRunner
from sdv_events.store.postgres import EventStore

log = structlog.get_logger("sdv.rebuild")
REBUILD_COMMAND = "rebuild"


class RebuildReadModel(msgspec.Struct, frozen=True):
    consumer: str  # the read model's name, as `ping` lists it among the tasks


class ReadModelRebuilt(msgspec.Struct, frozen=True):
    consumer: str
    events: int  # read from the stores
    applied: int  # handed to the projection
    checkpoint: int  # the SDV_EVENTS sequence the live consumer goes on from
    seconds: float


def rebuild_handler(
    consumers: Mapping[str, ConsumerRunner], store: EventStore, service: str, nc: NatsClient
) -> Handler[RebuildReadModel]:
    async def rebuild(request: RebuildReadModel, info: RequestInfo) -> ReadModelRebuilt:
        runner = consumers.get(request.consumer)
        if runner is None:
            raise NotFound(f"{service} runs no consumer named {request.consumer!r}",
                           details={"known": ", ".join(sorted(consumers))})
        if not runner.transactional:
            raise InvalidRequest(f"{request.consumer!r} is not a read model: nothing to rebuild",
                                 details={"reason": "not_a_read_model"})
        started = time.monotonic()
        log.info("rebuild_requested", consumer=request.consumer, actor=info.actor)
        try:
            built = await runner.rebuild("store", store=store, service=service, nc=nc)
        except ConsumerBusy as busy:
            raise Conflict(str(busy)) from None
        seconds = round(time.monotonic() - started, 3)
        log.info("rebuild_done", consumer=request.consumer, events=built.events,
                 applied=built.applied, seconds=seconds)
        return ReadModelRebuilt(request.consumer, built.events, built.applied, built.checkpoint,
                                seconds)

    return rebuild
