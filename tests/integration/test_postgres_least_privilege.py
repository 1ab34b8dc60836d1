"""PostgreSQL as `sdv up` runs it: nobody connects without a password, and each service connects
as a role of its own that reaches its own schema only and cannot rewrite its events.

Every test starts its own PostgreSQL (the `SDV_DATABASE_URL` of a developer is not the embedded
server these tests are about); roles are cluster-wide, so they are not made on a shared one.

Data dirs are made with `tempfile`, not in pytest's `tmp_path`: as root the server runs as a
system user that must traverse the path, and every pytest session started as root (another run
in parallel) resets `/tmp/pytest-of-root` to mode 0700.
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec
import pytest

from sdv_client.suite import Suite
from sdv_events.bus import CommandClient
from sdv_events.history import HistoryQuery, read_history
from sdv_events.processing.admin import REBUILD_COMMAND, ReadModelRebuilt, RebuildReadModel
from sdv_events.registry import event
from sdv_events.schemas.rollouts import ListRollouts, PolicyList, RolloutPolicy, Target
from sdv_events.servers import PostgresServer
from sdv_events.store import ANY, EventStore
from sdv_events.store.roles import (
    STORE_OWNER,
    STORE_TABLE_GRANTS,
    ProvisioningError,
    provision_services,
)
from sdv_events.store.schema import SchemaNotSetUp, schema_sql

pytestmark = pytest.mark.timeout(120)
Denied = asyncpg.InsufficientPrivilegeError


@event("pgroles.Noted")
class Noted(msgspec.Struct, frozen=True):
    text: str


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def passfile_of(url: str) -> Path:
    return Path(parse_qs(urlsplit(url).query)["passfile"][0])


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sdv-pgroles-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(scratch: Path) -> Iterator[PostgresServer]:
    with PostgresServer(data_dir=scratch / "postgres") as pg:
        yield pg


@pytest.fixture
async def service_urls(server: PostgresServer, scratch: Path) -> dict[str, str]:
    """Two services, alpha and beta, as `sdv up` provisions them; beta with a read model."""
    urls = await provision_services(server.url, {"alpha": "alpha", "beta": "beta"},
                                    scratch / "roles")
    beta = await EventStore.open(urls["beta"], "beta", setup=False)
    try:
        await beta.append("thing-1", ANY, [Noted("beta's")])
        await beta.pool.execute("CREATE TABLE beta.things (id text PRIMARY KEY)")
        await beta.pool.execute("INSERT INTO beta.things VALUES ('beta-row')")
    finally:
        await beta.close()
    return urls


@pytest.fixture
async def alpha(service_urls: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(service_urls["alpha"])
    yield conn
    await conn.close()


async def test_embedded_postgres_refuses_a_connection_without_the_password(
    server: PostgresServer, tmp_path: Path
) -> None:
    no_passfile = str(tmp_path / "none")  # nor ~/.pgpass
    for host in ("127.0.0.1", str(server.base_dir)):  # loopback and the Unix socket
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(host=host, port=server.port, user="postgres",
                                  database="postgres", passfile=no_passfile)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(host=host, port=server.port, user="postgres",
                                  database="postgres", password="postgres")
    # The URL holds no password, only the owner-only file it is in.
    assert urlsplit(server.url).password is None
    assert mode_of(passfile_of(server.url)) == 0o600
    conn = await asyncpg.connect(server.url)
    try:
        assert await conn.fetchval("SHOW password_encryption") == "scram-sha-256"
        stored = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
        assert stored.startswith("SCRAM-SHA-256$")
        rules = await conn.fetch("SELECT type, auth_method, address FROM pg_hba_file_rules")
    finally:
        await conn.close()
    assert {r["auth_method"] for r in rules} == {"scram-sha-256"}
    assert {r["address"] for r in rules} == {None, "127.0.0.1", "::1"}  # socket, loopback only


async def as_an_earlier_release_left_it(data_dir: Path) -> None:
    """Make a stopped server's data dir what an earlier release left: `initdb --auth=trust`'s
    rules, no superuser password, no password file."""
    with PostgresServer(data_dir=data_dir) as server:
        conn = await asyncpg.connect(server.url)
        try:
            await conn.execute("ALTER ROLE postgres PASSWORD NULL")
        finally:
            await conn.close()
    (data_dir / "pgdata" / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n")
    (data_dir / "superuser.pgpass").unlink()


async def test_a_trust_auth_data_dir_from_an_earlier_sdv_up_is_migrated_and_keeps_its_data(
    scratch: Path, tmp_path: Path
) -> None:
    data_dir = scratch / "postgres"
    with PostgresServer(data_dir=data_dir) as first:
        store = await EventStore.open(first.url, "legacy")
        try:
            await store.append("thing-1", ANY, [Noted("written before the upgrade")])
        finally:
            await store.close()
    await as_an_earlier_release_left_it(data_dir)

    with PostgresServer(data_dir=data_dir) as upgraded:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(host="127.0.0.1", port=upgraded.port, user="postgres",
                                  database="postgres", passfile=str(tmp_path / "none"))
        assert mode_of(data_dir / "superuser.pgpass") == 0o600
        store = await EventStore.open(upgraded.url, "legacy")
        try:
            assert [e.data for e in await store.read_stream("thing-1")] == [
                Noted("written before the upgrade")]
        finally:
            await store.close()


async def test_a_service_role_cannot_read_or_write_another_services_schema(
    alpha: asyncpg.Connection, service_urls: dict[str, str]
) -> None:
    attempts = [
        "SELECT count(*) FROM beta.events",
        "SELECT count(*) FROM beta.things",
        "INSERT INTO beta.things VALUES ('alpha-row')",
        "CREATE TABLE beta.planted (id int)",
        "SELECT * FROM beta.append_events('thing-2', -1, ARRAY[gen_random_uuid()], ARRAY['x'], "
        "ARRAY[1::smallint], ARRAY[''::bytea], ARRAY[''::bytea], ARRAY[now()], NULL, NULL)",
        "SET ROLE sdv_beta",
        f"SET ROLE {STORE_OWNER}",
        "ALTER ROLE sdv_beta PASSWORD 'mine'",
        "ALTER ROLE sdv_alpha SUPERUSER",
        "CREATE ROLE intruder LOGIN",
    ]
    for sql in attempts:
        with pytest.raises(Denied):
            await alpha.execute(sql)
    # Its own store works: it appends, reads and keeps read models of its own.
    store = await EventStore.open(service_urls["alpha"], "alpha", setup=False)
    try:
        await store.append("thing-1", ANY, [Noted("alpha's")])
        assert [e.data for e in await store.read_stream("thing-1")] == [Noted("alpha's")]
        await store.pool.execute("CREATE TABLE alpha.things (id text)")
        await store.pool.execute("DROP TABLE alpha.things")
    finally:
        await store.close()
    beta = await asyncpg.connect(service_urls["beta"])
    try:
        assert await beta.fetchval("SELECT count(*) FROM beta.things") == 1
        assert await beta.fetchval("SELECT count(*) FROM beta.events") == 1
    finally:
        await beta.close()


async def test_a_service_role_cannot_drop_the_append_only_trigger_or_rewrite_events(
    alpha: asyncpg.Connection, service_urls: dict[str, str], server: PostgresServer
) -> None:
    store = await EventStore.open(service_urls["alpha"], "alpha", setup=False)
    try:
        await store.append("thing-1", ANY, [Noted("the record")])
    finally:
        await store.close()
    attempts = [
        "UPDATE alpha.events SET type = 'forged'",
        "DELETE FROM alpha.events",
        "TRUNCATE alpha.events",
        "DROP TRIGGER events_append_only ON alpha.events",
        "ALTER TABLE alpha.events DISABLE TRIGGER events_append_only",
        "ALTER TABLE alpha.events DISABLE TRIGGER ALL",
        "SET session_replication_role = replica",  # which would skip every trigger
        "CREATE OR REPLACE FUNCTION alpha.refuse_change() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN NEW; END $$",
        "DROP FUNCTION alpha.refuse_change() CASCADE",
        "CREATE TRIGGER planted BEFORE INSERT ON alpha.events FOR EACH ROW "
        "EXECUTE FUNCTION alpha.refuse_change()",
        "ALTER TABLE alpha.events RENAME TO old_events",
        "DROP TABLE alpha.events",
        "DROP SCHEMA alpha CASCADE",
        "ALTER SCHEMA alpha RENAME TO gone",
        "SELECT setval('alpha.events_global_position_seq', 1)",
        f"GRANT {STORE_OWNER} TO sdv_alpha",
    ]
    for sql in attempts:
        with pytest.raises(Denied):
            await alpha.execute(sql)
    admin = await asyncpg.connect(server.url)
    try:
        assert await admin.fetchval("SELECT count(*) FROM alpha.events WHERE type <> 'forged'") == 1
        enabled = await admin.fetch("SELECT tgname FROM pg_trigger WHERE tgrelid = "
                                    "'alpha.events'::regclass AND tgenabled = 'O'")
        assert {r["tgname"] for r in enabled} == {"events_append_only", "events_no_truncate"}
    finally:
        await admin.close()


async def test_a_service_role_does_not_set_up_the_store_and_says_why_it_cannot_start(
    service_urls: dict[str, str],
) -> None:
    """SDV_SCHEMA_SETUP=0: a schema its owner did not set up is an error at start, not at the
    first append; and the role could not have run the store's DDL itself."""
    with pytest.raises(SchemaNotSetUp, match="'beta'"):
        await EventStore.open(service_urls["alpha"], "beta", setup=False)
    with pytest.raises(Denied):
        await EventStore.open(service_urls["alpha"], "alpha")  # setup=True: the DDL is the owner's


async def test_provisioning_takes_over_a_schema_an_earlier_sdv_up_made_as_superuser(
    server: PostgresServer, scratch: Path
) -> None:
    legacy = await EventStore.open(server.url, "gamma")  # as every service connected before
    try:
        await legacy.append("thing-1", ANY, [Noted("from before")])
        await legacy.pool.execute("CREATE TABLE gamma.things (id serial PRIMARY KEY, note text)")
        await legacy.pool.execute("CREATE SCHEMA gamma_rebuild_things")  # a rebuild cut short
    finally:
        await legacy.close()
    urls = await provision_services(server.url, {"gamma": "gamma"}, scratch / "roles")

    store = await EventStore.open(urls["gamma"], "gamma", setup=False)
    try:
        await store.append("thing-1", ANY, [Noted("after")])
        assert len(await store.read_stream("thing-1")) == 2
        await store.pool.execute("INSERT INTO gamma.things (note) VALUES ('its read model')")
        await store.pool.execute("DROP SCHEMA gamma_rebuild_things CASCADE")
        with pytest.raises(Denied):
            await store.pool.execute("DELETE FROM gamma.events")
    finally:
        await store.close()


async def test_a_damaged_password_file_stops_provisioning_and_names_the_file(
    server: PostgresServer, scratch: Path
) -> None:
    roles = scratch / "roles"
    roles.mkdir(mode=0o700)
    (roles / "alpha.pgpass").write_text("*:*:*:someone_else:pw\n")
    with pytest.raises(ProvisioningError, match=r"alpha\.pgpass holds no password for 'sdv_alpha'"):
        await provision_services(server.url, {"alpha": "alpha"}, roles)


def test_every_table_of_the_event_store_has_its_grants_listed() -> None:
    """A table a new `.sql` file adds to the store is not handed to the service as its own."""
    created = {m for sql in schema_sql("s")
               for m in re.findall(r"CREATE TABLE IF NOT EXISTS s\.(\w+)", sql)}
    assert created == set(STORE_TABLE_GRANTS)


async def test_sdv_up_gives_each_service_its_own_role(scratch: Path) -> None:
    data_dir = scratch / "sdv"
    async with Suite(data_dir=data_dir, nats_url=None, database_url=None) as suite:
        await suite.wait_ready(timeout=90)
        assert urlsplit(str(suite.database_url)).password is None  # printed by `sdv up`
        envs = {name: suite._service_env(name) for name in suite.services}
        for name, env in envs.items():
            url = env["SDV_DATABASE_URL"]
            assert urlsplit(url).username == f"sdv_{name}"
            assert urlsplit(url).password is None
            assert mode_of(passfile_of(url)) == 0o600
            assert env["SDV_SCHEMA_SETUP"] == "0"
        assert mode_of(data_dir / "postgres" / "roles") == 0o700
        assert mode_of(data_dir / "postgres" / "superuser.pgpass") == 0o600

        admin = await asyncpg.connect(str(suite.database_url))
        try:
            connected = {r["usename"] for r in await admin.fetch(
                "SELECT usename FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()")}
            roles = await admin.fetch(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                "WHERE rolname LIKE 'sdv\\_%'")
        finally:
            await admin.close()
        assert connected == {f"sdv_{name}" for name in suite.services}  # none as postgres
        assert not any(r["rolsuper"] or r["rolcreaterole"] or r["rolcreatedb"] for r in roles)

        # Under its role a service appends (binding an idempotency key), relays, projects,
        # answers history, and rebuilds a read model through a shadow schema of its own.
        assert suite._nc is not None
        client = CommandClient(suite._nc, actor="test", timeout=60.0)
        policy = RolloutPolicy(name="least-privilege", app="some-app", channel="dev",
                               target=Target(selector="env=test"))
        await client.call("orchestrator", "set_policy", policy, RolloutPolicy)
        listed = await client.call("orchestrator", "list_policies", ListRollouts(), PolicyList)
        assert [p.name for p in listed.policies] == ["least-privilege"]
        history = [e async for e in read_history(suite._nc, "orchestrator",
                                                 HistoryQuery(category="policy"))]
        assert [e.type for e in history] == ["orchestrator.PolicySet.v1"]
        for service, read_model in (("orchestrator", "desired_states"),
                                    ("registry", "device_inventory")):
            done = await client.call(service, REBUILD_COMMAND, RebuildReadModel(read_model),
                                     ReadModelRebuilt)
            assert done.consumer == read_model

    # Restarted on the same data dir: the same roles and passwords, the services come up again.
    before = {p.name: p.read_text() for p in (data_dir / "postgres" / "roles").iterdir()}
    async with Suite(data_dir=data_dir, nats_url=None, database_url=None) as again:
        await again.wait_ready(timeout=90)
    assert {p.name: p.read_text() for p in (data_dir / "postgres" / "roles").iterdir()} == before


async def test_sdv_up_on_a_data_dir_of_an_earlier_release_migrates_it_and_every_service_comes_up(
    scratch: Path,
) -> None:
    """Before: trust auth, every service connected as the superuser and made its schema and
    read models itself. After: passwords, the roles own what they should, services come up."""
    data_dir = scratch / "sdv"
    with PostgresServer(data_dir=data_dir / "postgres") as server:
        async with Suite(data_dir=data_dir, nats_url=None, database_url=server.url) as earlier:
            await earlier.wait_ready(timeout=90)
    await as_an_earlier_release_left_it(data_dir / "postgres")

    async with Suite(data_dir=data_dir, nats_url=None, database_url=None) as suite:
        await suite.wait_ready(timeout=90)
        admin = await asyncpg.connect(str(suite.database_url))
        try:
            owners = {(r["nspname"], r["relname"]): r["owner"] for r in await admin.fetch(
                "SELECT n.nspname, c.relname, c.relowner::regrole::text AS owner FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
                "AND n.nspname = ANY($1::text[])", list(suite.services))}
        finally:
            await admin.close()
    assert owners[("orchestrator", "events")] == STORE_OWNER
    assert owners[("orchestrator", "rollouts")] == "sdv_orchestrator"  # a read model
    assert {o for (schema, _), o in owners.items() if schema == "registry"} == {
        STORE_OWNER, "sdv_registry"}


@pytest.fixture(autouse=True)
def _no_external_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDV_DATABASE_URL", raising=False)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    for name in ("ALPHA", "BETA", "GAMMA", "PACKAGER", "REGISTRY", "ORCHESTRATOR", "MONITOR"):
        monkeypatch.delenv(f"SDV_{name}_SCHEMA", raising=False)
