"""`sdv.cmd.registry.add_operator|list_operators|revoke_operator`: an admin's (the server lets
no other role send the first and the last: `sdv_events.auth.roles`)."""

from __future__ import annotations

from faststream.nats import NatsRouter

from sdv_events.bus import RequestInfo, register_command
from sdv_events.schemas.operators import (
    AddOperator,
    ListOperators,
    OperatorCredentials,
    OperatorList,
    OperatorView,
    RevokeOperator,
)
from sdv_registry.operators import Operators
from sdv_registry.settings import SERVICE


def operator_router(operators: Operators) -> NatsRouter:
    router = NatsRouter()

    async def add_operator(req: AddOperator, info: RequestInfo) -> OperatorCredentials:
        return await operators.add(req.name, req.role, req.public_key, info.metadata(),
                                   info.idempotency_key)

    async def revoke_operator(req: RevokeOperator, info: RequestInfo) -> OperatorView:
        return await operators.revoke(req.name, req.reason, info.metadata(), info.idempotency_key)

    async def list_operators(req: ListOperators, _: RequestInfo) -> OperatorList:
        return OperatorList(await operators.list(req.include_revoked))

    register_command(router, SERVICE, "add_operator", AddOperator, add_operator)
    register_command(router, SERVICE, "revoke_operator", RevokeOperator, revoke_operator)
    register_command(router, SERVICE, "list_operators", ListOperators, list_operators)
    return router
