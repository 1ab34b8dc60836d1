"""Operators as the registry keeps them (operator-mode NATS, PostgreSQL): an admin adds one with
the public key the new operator's key pair has, the registry records it and signs a JWT for that
key; revoking pushes the operators account's revocations — again at once when the registry's
connection comes back to a restarted server, which forgot them (memory resolver)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from sdv_events.auth import Role, Trust, decode_jwt, format_creds, new_keypair, public_key, raw_creds, seed_of
from sdv_events.bus import CommandClient
from sdv_events.schemas.operators import (
    AddOperator,
    ListOperators,
    OperatorCredentials,
    OperatorList,
    OperatorView,
    RevokeOperator,
)
from sdv_events.servers import NatsServer
from sdv_events.store import EventStore

from .conftest import Harness, registry_settings, running_registry


@pytest.fixture
async def registry_slow_push(auth_nats: NatsServer, database_url: str, schema: str, trust: Trust,
                             tmp_path: Path, store: EventStore) -> AsyncIterator[Harness]:
    """Periodic pushes once in 10 minutes: what a test sees sooner is the push on reconnect."""
    settings = registry_settings(auth_nats.url, database_url, schema, trust, tmp_path,
                                 revocation_push_s=600.0)
    async with running_registry(settings):
        nc = await nats.connect(auth_nats.url, user_credentials=raw_creds(trust.service_creds("svc")))
        admin = await nats.connect(auth_nats.url, user_credentials=raw_creds(trust.operator_creds("boss", "admin")),
                                   max_reconnect_attempts=-1)
        yield Harness(auth_nats.url, trust, CommandClient(nc), store, settings, auth_nats,
                      CommandClient(admin, timeout=10))
        await admin.close()
        await nc.close()


async def _add(registry: Harness, name: str, role: str) -> tuple[OperatorCredentials, str]:
    key = new_keypair(Role.USER)
    issued = await registry.call("add_operator", AddOperator(name, role, public_key(key)),  # type: ignore[arg-type]
                                 OperatorCredentials)
    return issued, format_creds(issued.jwt, seed_of(key))


async def _connects(url: str, creds: str) -> bool:
    try:
        nc = await nats.connect(url, user_credentials=raw_creds(creds), allow_reconnect=False,
                                connect_timeout=2, max_reconnect_attempts=1)
    except Exception:
        return False
    await nc.close()
    return True


async def test_an_admin_adds_an_operator_signed_for_the_key_it_sent(registry_slow_push: Harness) -> None:
    registry = registry_slow_push
    issued, creds = await _add(registry, "ann", "operator")
    claims = decode_jwt(issued.jwt)
    assert (claims["name"], claims["sdv_operator_role"]) == ("ann", "operator")
    assert claims["sub"] == issued.operator.public_key
    assert claims["iss"] == public_key(registry.trust.operators_signing)
    assert issued.account == registry.trust.operators_account_key
    assert (issued.operator.status, issued.operator.added_by) == ("active", "operator:boss")
    assert await _connects(registry.url, creds)
    listed = await registry.call("list_operators", ListOperators(), OperatorList)
    assert [(o.name, o.role, o.added_by) for o in listed.operators] == [("ann", "operator", "operator:boss")]


async def test_a_revocation_is_pushed_again_when_a_restarted_server_forgot_it(registry_slow_push: Harness) -> None:
    registry = registry_slow_push
    _, creds = await _add(registry, "leaver", "viewer")
    revoked = await registry.call("revoke_operator", RevokeOperator("leaver", "left"), OperatorView)
    assert (revoked.status, revoked.revoked_by, revoked.reason) == ("revoked", "operator:boss", "left")
    assert not await _connects(registry.url, creds)

    # A restart: the server preloads the operators account as its config has it, without the
    # revocation; the registry's system connection comes back and pushes it again at once.
    registry.server.stop(keep_data=True)
    registry.server.start()
    deadline = time.monotonic() + 20
    while await _connects(registry.url, creds):
        assert time.monotonic() < deadline, "the restarted server still takes the revoked credentials"
        await asyncio.sleep(0.2)
    # Others still connect; revoking again changes nothing and answers the same.
    _, other = await _add(registry, "stayer", "viewer")
    assert await _connects(registry.url, other)
    again = await registry.call("revoke_operator", RevokeOperator("leaver"), OperatorView)
    assert again.revoked_at == revoked.revoked_at
