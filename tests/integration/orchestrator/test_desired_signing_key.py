"""The orchestrator signs every desired document it writes with a key of its own (issue #11): the
key agents are told to pin (`sdv.cmd.orchestrator.public_key`, the `.pub` file beside the key)
verifies each of them — a rollout's and a rollback's, whose `rollback` flag is what allows a
downgrade — and it is neither the packager's key nor a new one after a restart. Real NATS, real
PostgreSQL, the real services in-process, simulated agents that verify as the real agent does."""

from __future__ import annotations

import stat
from typing import Any

import pytest

from sdv_events.desired_signing import DesiredVerifier
from sdv_events.provisioning import DESIRED_BUCKET
from sdv_events.schemas.deployment import GetPublicKey
from sdv_events.schemas.packages import SigningKey

pytestmark = pytest.mark.timeout(60)
APP = "fleet-app"


async def public_key(suite: Any) -> SigningKey:
    return await suite.commands.call("orchestrator", "public_key", GetPublicKey(), SigningKey)  # type: ignore[no-any-return]


async def test_every_desired_document_verifies_with_the_orchestrators_own_published_key(suite: Any) -> None:
    agents = await suite.add_agents(4)
    failing = {"sim-02", "sim-03"}
    for agent in agents:
        if agent.device_id in failing:
            agent.script["2.0.0"] = "fail"
    v1 = await suite.publish(APP, "1.0.0")
    await suite.wait_status((await suite.create(v1, selector="fleet=sim", kind="all-at-once")).rollout_id,
                            "completed")
    v2 = await suite.publish(APP, "2.0.0")
    view = await suite.create(v2, selector="fleet=sim", kind="all-at-once", success=1.0, error=0.0)
    assert (await suite.wait_status(view.rollout_id, "rolled_back", "completed")).status == "rolled_back"

    key = await public_key(suite)
    key_file = suite.orchestrator_key_path
    assert key.public_key_b64 == key_file.with_suffix(".pub").read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key.public_key_b64 != (await suite.packages.signing_key()).public_key_b64

    verifier = DesiredVerifier(key.public_key_b64)
    kv = await suite.nc.jetstream().key_value(DESIRED_BUCKET)

    async def rolled_back() -> bool:
        docs = [verifier.open((await kv.get(a.device_id)).value, device_id=a.device_id) for a in agents]
        return all(doc.apps[APP].package.digest == v1.digest and doc.apps[APP].rollback for doc in docs)

    assert await suite.eventually(rolled_back)  # every document opened: signed with that key
    for agent in agents:
        assert agent.untrusted == []  # no agent ever saw a document it would refuse
        assert await suite.eventually(lambda a=agent: _true(a.running == {APP: "1.0.0"}))
        assert "2.0.0" in agent.versions_seen(APP)

    # A restarted orchestrator signs with the same key: agents need no new configuration.
    await suite.stop_orchestrator(suite.orchestrators[0])
    await suite.start_orchestrator()
    assert (await public_key(suite)).public_key_b64 == key.public_key_b64


async def _true(value: bool) -> bool:
    return value
