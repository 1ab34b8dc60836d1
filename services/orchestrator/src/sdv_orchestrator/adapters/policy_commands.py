"""`sdv.cmd.orchestrator.set_policy|delete_policy|list_policies`."""

from __future__ import annotations

from faststream.nats import NatsRouter

from sdv_events.bus import RequestInfo, register_command
from sdv_events.schemas.rollouts import ListRollouts, PolicyList, PolicyRef, RolloutPolicy
from sdv_orchestrator.policies import Policies
from sdv_orchestrator.settings import SERVICE


def policy_router(policies: Policies) -> NatsRouter:
    router = NatsRouter()

    async def set_policy(req: RolloutPolicy, info: RequestInfo) -> RolloutPolicy:
        return await policies.set(req, metadata=info.metadata(), key=info.idempotency_key)

    async def delete_policy(req: PolicyRef, info: RequestInfo) -> PolicyRef:
        await policies.delete(req.name, metadata=info.metadata())
        return req

    async def list_policies(_: ListRollouts, __: RequestInfo) -> PolicyList:
        return PolicyList(await policies.all())

    register_command(router, SERVICE, "set_policy", RolloutPolicy, set_policy)
    register_command(router, SERVICE, "delete_policy", PolicyRef, delete_policy)
    register_command(router, SERVICE, "list_policies", ListRollouts, list_policies)
    return router
