"""`sdv.cmd.orchestrator.*`: create, start, pause, resume, cancel, rollback, activate (release
held devices), get (paged; a plain `RolloutRef` gets the first page), list; public_key (the key
desired documents are signed with)."""

from __future__ import annotations

from faststream.nats import NatsRouter

from sdv_events.bus import RequestInfo, register_command
from sdv_events.desired_signing import DesiredSigner
from sdv_events.schemas.deployment import GetPublicKey
from sdv_events.schemas.packages import SigningKey
from sdv_events.schemas.rollouts import (
    CreateRolloutRequest,
    GetRollout,
    ListRollouts,
    RolloutList,
    RolloutRef,
    RolloutView,
)
from sdv_events.schemas.scheduling import ActivateRollout
from sdv_orchestrator.application import Orchestrator
from sdv_orchestrator.settings import SERVICE


def command_router(orchestrator: Orchestrator) -> NatsRouter:
    router = NatsRouter()
    o = orchestrator

    async def create(req: CreateRolloutRequest, info: RequestInfo) -> RolloutView:
        return await o.create(req, metadata=info.metadata(), key=info.idempotency_key)

    async def start(req: RolloutRef, info: RequestInfo) -> RolloutView:
        return await o.start(req.rollout_id, metadata=info.metadata())

    async def pause(req: RolloutRef, info: RequestInfo) -> RolloutView:
        return await o.pause(req.rollout_id, req.reason, metadata=info.metadata())

    async def resume(req: RolloutRef, info: RequestInfo) -> RolloutView:
        return await o.resume(req.rollout_id, metadata=info.metadata())

    async def cancel(req: RolloutRef, info: RequestInfo) -> RolloutView:
        return await o.cancel(req.rollout_id, req.reason, metadata=info.metadata())

    async def rollback(req: RolloutRef, info: RequestInfo) -> RolloutView:
        return await o.rollback(req.rollout_id, req.reason, metadata=info.metadata())

    async def activate(req: ActivateRollout, info: RequestInfo) -> RolloutView:
        return await o.activate(req.rollout_id, req.device_ids, metadata=info.metadata())

    async def get(req: GetRollout, _: RequestInfo) -> RolloutView:
        return await o.get(req.rollout_id, req.offset, req.limit)

    async def list_(req: ListRollouts, _: RequestInfo) -> RolloutList:
        return RolloutList(await o.list(req.app, req.status, req.limit))

    for name, request_type, handler in [
        ("create", CreateRolloutRequest, create), ("start", RolloutRef, start),
        ("pause", RolloutRef, pause), ("resume", RolloutRef, resume),
        ("cancel", RolloutRef, cancel), ("rollback", RolloutRef, rollback),
        ("activate", ActivateRollout, activate),
        ("get", GetRollout, get), ("list", ListRollouts, list_),
    ]:
        register_command(router, SERVICE, name, request_type, handler)  # type: ignore[arg-type]
    return router


def public_key_router(signer: DesiredSigner) -> NatsRouter:
    """The public key agents pin (`sdv-agent --orchestrator-key`); the private one never leaves."""
    router = NatsRouter()

    async def public_key(_: GetPublicKey, __: RequestInfo) -> SigningKey:
        return SigningKey(signer.key_id, signer.public_key_b64)

    register_command(router, SERVICE, "public_key", GetPublicKey, public_key)
    return router
