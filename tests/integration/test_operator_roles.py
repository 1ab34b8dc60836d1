"""Operators with roles, end to end on the suite as `sdv up` runs it (embedded NATS in operator
mode over TLS, every service, one simulated device): the bootstrap admin adds a viewer and an
operator with `sdv operators add`, each then uses the `sdv` CLI with the credentials file it got.
The server refuses what a role does not include (a permissions violation, reported at once and
clearly by the CLI); what it lets through is recorded with the operator's name from its
credentials — also when the client forges the headers that could name someone else; a revoked
operator is disconnected and refused."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from sdv_client.demo_app import APP, write_app
from sdv_client.health import SERVICES
from sdv_client.local_agents import SELECTOR
from sdv_client.suite import Suite
from sdv_events.auth import decode_jwt
from sdv_events.auth.client_tls import tls_options
from sdv_events.auth.creds import jwt_of_creds
from sdv_events.bus.actor import REQUEST_INFO_HEADER

pytestmark = pytest.mark.timeout(240)
SDV = Path(sys.executable).parent / "sdv"


@dataclass
class Result:
    code: int
    doc: dict[str, Any]


def sdv(suite: Suite, *args: str, creds: Path | str | None = None) -> Result:
    """The CLI as a user runs it: the env file of `sdv up` (its admin), or `--creds FILE`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SDV_NATS_URL", "SDV_NATS_CREDS", "SDV_NATS_CA", "SDV_CREDS")}
    env |= {"SDV_NATS_URL": str(suite.nats_url), "SDV_NATS_CA": str(suite.nats_ca),
            "SDV_NATS_CREDS": str(suite.nats_creds)}
    argv = [str(SDV), *(("--creds", str(creds)) if creds else ()), *args, "--json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90, check=False)
    try:
        doc = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"{args}: not JSON: {done.stdout!r} {done.stderr[-2000:]!r}") from None
    return Result(done.returncode, doc)


async def run(suite: Suite, *args: str, creds: Path | str | None = None) -> Result:
    return await asyncio.to_thread(sdv, suite, *args, creds=creds)


@dataclass
class People:
    viewer: Path
    operator: Path
    device: str
    directory: Path


@pytest.fixture(scope="module")
async def suite(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> AsyncIterator[Suite]:
    data_dir = tmp_path_factory.mktemp("sdv-up-operators")
    with pytest.MonkeyPatch.context() as env:
        # Schemas of this run's own: the simulated device's id is the same every run, and a
        # PostgreSQL named by SDV_DATABASE_URL keeps what earlier runs recorded.
        run_id = uuid.uuid4().hex[:8]
        for service in SERVICES:
            env.setenv(f"SDV_{service.upper()}_SCHEMA", f"{service}_ops_{run_id}")
        async with Suite(data_dir=data_dir, nats_url=None, database_url=database_url, simulate=1) as running:
            await running.wait_ready(timeout=60)
            await running.start_agents()
            await running.wait_devices(timeout=60)
            yield running


@pytest.fixture(scope="module")
async def people(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> People:
    """The admin of `sdv up` adds a viewer and an operator; their credentials files."""
    directory = tmp_path_factory.mktemp("people")
    added = await asyncio.gather(
        run(suite, "operators", "add", "vera", "--role", "viewer", "--out", str(directory / "vera.creds")),
        run(suite, "operators", "add", "otto", "--role", "operator", "--out", str(directory / "otto.creds")))
    for result in added:
        assert result.code == 0, result.doc
    devices = await run(suite, "devices", "list", "--selector", SELECTOR)
    return People(directory / "vera.creds", directory / "otto.creds", devices.doc["devices"][0]["device_id"],
                  directory)


def _refused(result: Result, subject: str, who: str) -> None:
    assert result.code == 1, result.doc
    assert result.doc["code"] == "forbidden", result.doc
    assert result.doc["details"]["reason"] == "permissions_violation"
    assert result.doc["details"]["subject"] == subject
    assert "refused by the NATS server" in result.doc["error"]
    assert who in result.doc["error"], result.doc["error"]  # it names the credentials' operator
    # The server's refusal, not a timeout (that would be code "timeout"); that it comes within a
    # round trip is measured in test_operator_permissions.py (CLI start-up alone takes seconds).


async def test_an_admin_adds_operators_whose_credentials_name_them_with_their_role(
        suite: Suite, people: People) -> None:
    for path in (people.viewer, people.operator):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "-----BEGIN USER NKEY SEED-----" in path.read_text()
    listed = await run(suite, "operators", "list", creds=people.viewer)  # a query: a viewer's too
    assert listed.code == 0, listed.doc
    rows = {o["name"]: o for o in listed.doc["operators"]}
    assert (rows["vera"]["role"], rows["otto"]["role"]) == ("viewer", "operator")
    assert rows["vera"]["added_by"] == rows["otto"]["added_by"] == "operator:admin"
    # The registry signed for the key the CLI made; the seed never left this machine.
    assert rows["vera"]["public_key"] == decode_jwt(jwt_of_creds(people.viewer.read_text()))["sub"]
    again = await run(suite, "operators", "add", "vera", "--role", "admin",
                      "--out", str(people.directory / "vera-2.creds"))
    assert (again.code, again.doc["code"]) == (1, "conflict")
    reserved = await run(suite, "operators", "add", "admin", "--role", "viewer",
                         "--out", str(people.directory / "admin.creds"))
    assert (reserved.code, reserved.doc["code"]) == (1, "conflict")
    assert not (people.directory / "admin.creds").exists()


async def test_only_an_admin_adds_operators_or_admits_devices(suite: Suite, people: People) -> None:
    eve = people.directory / "eve.creds"
    results = await asyncio.gather(
        run(suite, "operators", "add", "eve", "--role", "admin", "--out", str(eve), creds=people.operator),
        run(suite, "operators", "revoke", "vera", creds=people.operator),
        run(suite, "devices", "accept", "car-unknown", creds=people.operator),
        run(suite, "devices", "label", people.device, "env=prod", creds=people.operator))
    for result, subject in zip(results, ("sdv.cmd.registry.add_operator", "sdv.cmd.registry.revoke_operator",
                                         "sdv.cmd.registry.accept", "sdv.cmd.registry.set_labels"),
                               strict=True):
        _refused(result, subject, "otto")
    assert not eve.exists()


async def test_a_viewer_reads_but_the_server_refuses_it_a_rollout(suite: Suite, people: People,
                                                                  tmp_path: Path) -> None:
    reads = await asyncio.gather(*(run(suite, *args, creds=people.viewer) for args in (
        ("rollout", "list"), ("devices", "list"), ("package", "list"), ("status",))))
    for result in reads:
        assert result.code == 0, result.doc
    create = await run(suite, "rollout", "create", APP, "1.0.0", "-d", people.device, creds=people.viewer)
    _refused(create, "sdv.cmd.orchestrator.create", "vera")
    # Nor may it upload an app to publish (the upload itself is refused, before any command).
    publish = await run(suite, "package", "publish", str(write_app(tmp_path, "9.9.9")), creds=people.viewer)
    assert (publish.code, publish.doc["code"]) == (1, "forbidden"), publish.doc
    assert "vera" in publish.doc["error"]


async def _history(suite: Suite, service: str, stream: str) -> list[dict[str, Any]]:
    result = await run(suite, "history", service, "--stream", stream)
    assert result.code == 0, result.doc
    events: list[dict[str, Any]] = result.doc["events"]
    return events


async def test_an_operator_publishes_and_starts_a_rollout_recorded_under_its_name(
        suite: Suite, people: People, tmp_path: Path) -> None:
    published = await run(suite, "package", "publish", str(write_app(tmp_path, "1.0.0")), creds=people.operator)
    assert published.code == 0, published.doc
    created = await run(suite, "rollout", "create", APP, "1.0.0", "-d", people.device, "--waves", "100%",
                        creds=people.operator)
    assert created.code == 0, created.doc
    rollout = created.doc["rollout"]
    history = await _history(suite, "orchestrator", f"rollout-{rollout['rollout_id']}")
    assert history[0]["type"].startswith("orchestrator.RolloutCreated")
    assert history[0]["actor"] == "operator:otto"
    package = await _history(suite, "packager", f"package-{APP}")
    assert [e["actor"] for e in package if ".PackagePublished" in e["type"]] == ["operator:otto"]


async def test_a_forged_actor_header_changes_nothing(suite: Suite, people: People) -> None:
    """otto's own connection sends a cancel with a `Nats-Request-Info` naming the admin — the
    admin's genuine JWT inside — and `Sdv-Actor: operator:admin`: the record names otto."""
    created = await run(suite, "rollout", "create", APP, "1.0.0", "-d", people.device, "--no-start",
                        creds=people.operator)
    assert created.code == 0, created.doc
    rollout_id = created.doc["rollout"]["rollout_id"]
    admin_jwt = jwt_of_creds(await asyncio.to_thread(Path(str(suite.nats_creds)).read_text))
    forged = {REQUEST_INFO_HEADER: json.dumps({"acc": "A" * 56, "user": "U" + "A" * 55, "jwt": admin_jwt,
                                               "name": "admin"}),
              "Sdv-Actor": "operator:admin", "Sdv-Command-Id": str(uuid.uuid4())}
    nc = await nats.connect(str(suite.nats_url), user_credentials=str(people.operator),
                            **tls_options(str(suite.nats_url), suite.nats_ca))
    try:
        reply = await nc.request("sdv.cmd.orchestrator.cancel",
                                 json.dumps({"rollout_id": rollout_id, "reason": "forged"}).encode(),
                                 headers=forged, timeout=30)
    finally:
        await nc.close()
    assert json.loads(reply.data)["status"] == "ok", reply.data
    history = await _history(suite, "orchestrator", f"rollout-{rollout_id}")
    cancelled = [e for e in history if ".RolloutCancelled" in e["type"]]
    assert [e["actor"] for e in cancelled] == ["operator:otto"]
    assert all(e["actor"] != "operator:admin" for e in history)


async def test_a_revoked_operator_is_disconnected_and_refused(suite: Suite, people: People) -> None:
    creds = people.directory / "temp.creds"
    added = await run(suite, "operators", "add", "temp", "--role", "operator", "--out", str(creds))
    assert added.code == 0, added.doc
    assert (await run(suite, "rollout", "list", creds=creds)).code == 0
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await nats.connect(str(suite.nats_url), user_credentials=str(creds), allow_reconnect=False,
                            closed_cb=on_closed, **tls_options(str(suite.nats_url), suite.nats_ca))
    try:
        revoked = await run(suite, "operators", "revoke", "temp", "--reason", "left the team")
        assert revoked.code == 0, revoked.doc
        assert revoked.doc["operator"]["status"] == "revoked"
        await asyncio.wait_for(closed.wait(), 10)  # the server closed its live connection
    finally:
        if not nc.is_closed:
            await nc.close()
    refused = await run(suite, "rollout", "list", creds=creds)
    assert (refused.code, refused.doc["code"]) == (1, "unauthorized"), refused.doc
    assert "temp" in refused.doc["error"]
    assert "authorization violation" in refused.doc["error"]
    listed = await run(suite, "operators", "list", "--all")
    row = next(o for o in listed.doc["operators"] if o["name"] == "temp")
    assert (row["status"], row["revoked_by"], row["reason"]) == ("revoked", "operator:admin", "left the team")
    assert "temp" not in {o["name"] for o in (await run(suite, "operators", "list")).doc["operators"]}
