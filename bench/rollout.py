"""Rollout benchmark: a canary rollout (1% → 10% → 100%) to a fleet of SIMULATED devices on the real
bus and event store, from the create request to `RolloutCompleted`, beside a raw JetStream
baseline measured in the same run.

    .venv/bin/python bench/rollout.py --quick        # 1,000 devices
    .venv/bin/python bench/rollout.py                # 10,000 devices
    .venv/bin/python bench/rollout.py --devices 3000 --profile /tmp/orch.prof
    .venv/bin/python bench/rollout.py --quick --upgrade   # 1,000 devices already on 1.0.0 → 2.0.0

Starts its own NATS and PostgreSQL (`sdv_events.servers`) unless SDV_NATS_URL / SDV_DATABASE_URL
name existing ones (then it works in fresh schemas `bench_<run>_{p,r,o}`). The packager and the
registry run in this process (`serve(settings, stop)`); the orchestrator runs as a child process
(`python -m sdv_orchestrator`, optionally under cProfile) so its CPU can be read from /proc.

Before the clock starts: one package is published, and every device is registered the way a
real fleet is: pre-authorised with the label `bench=<run>` and announced with that token (so it
is accepted), until the registry's inventory lists them all. The rollout targets the selector
`bench=<run>`, so planning asks the registry for the devices over the bus inside the timed part.

The devices are simulated by one client in this process: one KV watcher over all of
`sdv_desired` that verifies each document as an agent does, with the orchestrator's public key
(asked with `sdv.cmd.orchestrator.public_key`; a document that does not verify is counted in
`untrusted_docs` and answered by nothing), and for each desired document naming the rollout's
package an `AppHealthy` fact (an envelope on `sdv.evt.agent.<device>.AppHealthy` with a
`Nats-Msg-Id`, as the edge agent publishes it), published asynchronously. Nothing is installed.

`--upgrade`: every device first gets 1.0.0 by a rollout of its own (not timed; the orchestrator
assigns it in its desired-state read model, as for a real fleet), then 2.0.0 is published and
the timed rollout upgrades all of them, so its plan records a previous version per device
(the case that used to produce one event over NATS's max payload above ~1,150 devices).

Figures: `seconds` = create request sent → `RolloutCompleted` received on the bus;
`devices_per_s`; `events_appended` = events of the rollout's stream in the event store;
`facts_published`; `raw_publish_s` = that many plain `js.publish_async` of a payload of the
same size (one DeviceTargeted envelope) to a stream of its own, all acks awaited, in the same
run; `ratio` = seconds / raw_publish_s; `plan_s` = create → reply (registry listing, eligibility,
reservations, first wave appended); `waves_s` = per wave, WaveStarted → WaveCompleted (event
times); `last_desired_doc_s` = create → the last desired document seen by the simulated devices, and
`after_last_doc_s` = from there to RolloutCompleted (small: desired-state writing is the
critical path);
`get_reply_bytes` = size of the `get` reply of the completed rollout (its first page: at most
1,000 devices; NATS refuses messages over 1 MB by default); `orchestrator_cpu_s` and
`orchestrator_cpu_pct` over the timed part; `max_event_bytes` / `max_event_type` = the largest
event body stored in the orchestrator's schema during the run (`max(length(data))` of
`<schema>.events`), beside the store's 256 KiB limit and NATS's 1 MB; `upgrade`, and with it
`first_rollout_s` (the untimed-for-the-goal rollout of 1.0.0); `goal_s` 30 for 10,000.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from sdv_client.packages import PackagerClient
from sdv_events.auth import Role, new_keypair
from sdv_events.bus import CommandClient
from sdv_events.codec import encode
from sdv_events.desired_signing import DesiredVerifier, UntrustedDesired
from sdv_events.enrolment import announce as signed_announce
from sdv_events.envelope import Envelope
from sdv_events.ids import stream_id
from sdv_events.provisioning import DESIRED_BUCKET, provision
from sdv_events.registry import default_registry
from sdv_events.schemas.agent import AppHealthy
from sdv_events.schemas.deployment import GetPublicKey
from sdv_events.schemas.devices import (
    Capabilities,
    DeviceList,
    DeviceView,
    ListDevices,
    PreauthorizeDevice,
)
from sdv_events.schemas.packages import SigningKey
from sdv_events.schemas.rollouts import (
    CreateRolloutRequest,
    DeviceTargeted,
    RolloutRef,
    RolloutView,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
)
from sdv_events.servers import NatsServer, PostgresServer
from sdv_events.service import Ping, ServiceHealth
from sdv_events.subjects import agent_fact_subject
from sdv_packager.app import serve as serve_packager
from sdv_packager.settings import PackagerSettings
from sdv_registry.app import serve as serve_registry
from sdv_registry.settings import RegistrySettings

APP = "bench-app"
CAPS = Capabilities(hardware_type="linux-generic", arch="x86_64", runtimes=["native"],
                    python_version="3.11.9", agent_version="bench", memory_mb=4096, storage_mb=32768)
GOAL_S, GOAL_DEVICES = 30.0, 10_000
MAX_PAYLOAD = 1024 * 1024  # NATS's default max_payload
MAX_EVENT_BYTES = 256 * 1024  # the event store's default limit on one event's body


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text} (load {os.getloadavg()[0]:.2f})", flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def gather_limited(items: list[Any], limit: int, work: Callable[[Any], Awaitable[None]]) -> None:
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(limit)))


@contextlib.contextmanager
def servers() -> Any:
    with contextlib.ExitStack() as stack:
        nats_url = os.environ.get("SDV_NATS_URL") or stack.enter_context(NatsServer()).url
        db_url = os.environ.get("SDV_DATABASE_URL") or stack.enter_context(PostgresServer()).url
        yield nats_url, db_url


async def ping(nc: NatsClient, service: str, alive: Callable[[], bool], timeout: float = 60.0) -> None:
    client = CommandClient(nc, timeout=1.0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.call(service, "ping", Ping(), ServiceHealth)
            return
        except Exception:
            if not alive() or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def in_process(name: str, serve: Any, settings: Any, nc: NatsClient) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    await ping(nc, name, lambda: not task.done())
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def orchestrator_process(nats_url: str, db_url: str, schema: str, log: Path, nc: NatsClient,
                               profile: str | None) -> AsyncIterator[asyncio.subprocess.Process]:
    env = os.environ | {"SDV_NATS_URL": nats_url, "SDV_DATABASE_URL": db_url,
                        "SDV_ORCHESTRATOR_SCHEMA": schema, "SDV_LOG_LEVEL": "WARNING",
                        "SDV_ORCHESTRATOR_SIGNING_KEY": str(log.parent / "keys" / "orchestrator-ed25519.pem")}
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, *prof, "-m", "sdv_orchestrator",
                                                    env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
    try:
        await ping(nc, "orchestrator", lambda: proc.returncode is None)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()


async def register(nc: NatsClient, ops: CommandClient, run: str, n: int) -> list[str]:
    ids = [f"dev-{run}-{i:05d}" for i in range(n)]
    keypair = new_keypair(Role.USER)  # the registry does not mind devices sharing a key

    async def one(device_id: str) -> None:
        token = f"tok-{device_id}-{run}"
        await ops.call("registry", "preauthorize", PreauthorizeDevice(device_id, token, {"bench": run}),
                       DeviceView)
        # The agent's exchange: a nonce, then the announce signed with the device's key.
        reply = await signed_announce(nc, keypair, device_id, CAPS, token=token, timeout=60)
        assert reply.status == "accepted", f"{device_id}: {reply.status}"

    await gather_limited(ids, 64, one)
    deadline = time.monotonic() + 120
    while True:
        page = await ops.call("registry", "list", ListDevices(selector=f"bench={run}", limit=1),
                              DeviceList)
        if page.total >= n:
            return ids
        if time.monotonic() > deadline:
            raise TimeoutError(f"registry lists {page.total} of {n} devices")
        await asyncio.sleep(0.2)


class SimulatedFleet:
    """All devices in one client: a KV watcher over `sdv_desired`, AppHealthy for each new
    desired version of the rollout's package."""

    def __init__(self, nc: NatsClient, verifier: DesiredVerifier) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.verifier = verifier
        self.digest = ""
        self.answered: set[str] = set()
        self.docs = 0
        self.untrusted = 0
        self.last_doc_at: dict[str, float] = {}  # device → when its last document arrived
        self.pending: list[asyncio.Future[Any]] = []
        self.task: asyncio.Task[None] | None = None
        self.type_name, self.schema_version = default_registry.describe(
            AppHealthy(device_id="x", app="x", version="x", digest="x", desired_revision=0))

    async def start(self) -> None:
        kv = await self.js.key_value(DESIRED_BUCKET)
        watcher = await kv.watchall()
        self.task = asyncio.create_task(self._watch(watcher))

    async def _watch(self, watcher: Any) -> None:
        while True:
            try:
                entry = await watcher.updates(timeout=3600)
            except nats.errors.TimeoutError:
                continue
            if entry is None or not entry.value:
                continue
            self.docs += 1
            try:  # as every agent does (a replayed revision is the agent's own check, not timed here)
                doc = self.verifier.open(entry.value, device_id=entry.key)
            except UntrustedDesired as refused:
                self.untrusted += 1
                say(f"untrusted desired document for {entry.key}: {refused.cause}: {refused}")
                continue
            self.last_doc_at[doc.device_id] = time.perf_counter()
            app = doc.apps.get(APP)
            if app is None or app.package.digest != self.digest or doc.device_id in self.answered:
                continue
            self.answered.add(doc.device_id)
            fact = AppHealthy(device_id=doc.device_id, app=APP, version=app.package.version,
                              digest=app.package.digest, desired_revision=doc.revision,
                              rollout_id=app.rollout_id)
            msg_id = f"{doc.device_id}.{APP}.{app.package.digest[:16]}.{doc.revision}.{self.type_name}"
            envelope = Envelope(
                event_id=uuid.uuid5(uuid.NAMESPACE_URL, msg_id),
                stream_id=stream_id("agent", doc.device_id), version=1, type=self.type_name,
                schema_version=self.schema_version, occurred_at=datetime.now(UTC), data=fact,
                actor=f"agent:{doc.device_id}", correlation_id=app.rollout_id)
            self.pending.append(await self.js.publish_async(
                agent_fact_subject(doc.device_id, self.type_name), encode(envelope),
                headers={"Nats-Msg-Id": msg_id}))
            if len(self.pending) >= 1000:
                batch, self.pending = self.pending, []
                await asyncio.gather(*batch)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await asyncio.gather(*self.pending, return_exceptions=True)


async def quiesce(nc: NatsClient, timeout: float = 300.0) -> None:
    """Wait until no consumer on SDV_EVENTS has anything pending (the orchestrator's policy
    consumer, the services' projections), so the clock measures the rollout alone."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while True:
        busy = [(c.name, c.num_pending, c.num_ack_pending) for c in await js.consumers_info("SDV_EVENTS")
                if c.num_pending or c.num_ack_pending]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumers still busy: {busy}")
        await asyncio.sleep(0.2)


async def raw_publish(nc: NatsClient, run: str, count: int, payload: bytes) -> float:
    js = nc.jetstream()
    name = f"BENCH_RAW_{run.upper()}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"bench.raw.{run}.>"], duplicate_window=600))
    try:
        start = time.perf_counter()
        futures = []
        for i in range(count):
            futures.append(await js.publish_async(f"bench.raw.{run}.{i % 1000}", payload,
                                                  headers={"Nats-Msg-Id": f"{run}-{i}"}))
            if len(futures) >= 4000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await js.delete_stream(name)


async def publish_version(nc: NatsClient, tmp: Path, version: str) -> Any:
    app = tmp / f"app-{version}"
    app.mkdir()
    (app / "sdv-app.toml").write_text(
        f'[app]\nname = "{APP}"\nversion = "{version}"\nentry_point = "main.py"\n')
    (app / "main.py").write_text(f"print('bench {version}')\n")
    return await PackagerClient(nc, actor="bench").publish_dir(app)


async def timed_rollout(nc: NatsClient, ops: CommandClient, fleet: SimulatedFleet, run: str,
                        rollout_id: str, package: Any, pid: int) -> dict[str, Any]:
    """One canary rollout of `package` to `bench=<run>`, create request → RolloutCompleted."""
    fleet.digest, fleet.answered, fleet.last_doc_at, fleet.docs = package.digest, set(), {}, 0
    done = asyncio.get_running_loop().create_future()

    async def on_end(msg: Any) -> None:
        if not done.done():
            done.set_result((time.perf_counter(), msg.subject.rsplit(".", 1)[1]))

    subs = [await nc.subscribe(f"sdv.evt.rollout.{rollout_id}.{t}", cb=on_end)
            for t in ("RolloutCompleted", "RolloutAborted")]
    request = CreateRolloutRequest(
        package=APP, version=package.version, target=Target(selector=f"bench={run}"),
        strategy=Strategy(kind="canary", waves=["1%", "10%", "100%"]),
        thresholds=Thresholds(0.95, 0.05), timeouts=Timeouts(600.0, 0.0),
        rollout_id=rollout_id,
    )
    say(f"rollout of {package.version} starts")
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    view = await ops.call("orchestrator", "create", request, RolloutView, timeout=300)
    plan_s = time.perf_counter() - start
    say(f"planned in {plan_s:.2f}s: waves {[w.size for w in view.waves]}")
    end, outcome = await asyncio.wait_for(done, 600)
    seconds = end - start
    cpu = cpu_seconds(pid) - cpu0
    say(f"{outcome} after {seconds:.2f}s")
    for sub in subs:
        await sub.unsubscribe()
    if outcome != "RolloutCompleted":
        raise RuntimeError(f"rollout {rollout_id} ended with {outcome}")
    return {"seconds": seconds, "start": start, "end": end, "plan_s": plan_s, "view": view,
            "cpu": cpu, "last_doc": max(fleet.last_doc_at.values()), "facts": len(fleet.answered)}


async def bench(devices: int, profile: str | None, upgrade: bool = False) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="sdv-bench-rollout-"))
    first: dict[str, Any] | None = None
    with servers() as (nats_url, db_url):
        nc = await nats.connect(nats_url, max_reconnect_attempts=-1)
        agents_nc = await nats.connect(nats_url, max_reconnect_attempts=-1, pending_size=256 * 1024 * 1024)
        await provision(nc.jetstream())
        ops = CommandClient(nc, actor="bench", timeout=60)
        schemas = {k: f"bench_{run}_{k}" for k in "pro"}
        packager = PackagerSettings(service="packager", nats_url=nats_url, database_url=db_url,
                                    schema_name=schemas["p"], signing_key_path=tmp / "key.pem",
                                    wheels_offline=True, log_level="WARNING")
        registry = RegistrySettings(service="registry", nats_url=nats_url, database_url=db_url,
                                    schema_name=schemas["r"], log_level="WARNING",
                                    heartbeat_silence_s=3600.0,
                                    # measured here: rollouts, not the announce flood limits
                                    announce_global_rate=1e6, announce_global_burst=1e6)
        try:
            async with in_process("packager", serve_packager, packager, nc), \
                    in_process("registry", serve_registry, registry, nc), \
                    orchestrator_process(nats_url, db_url, schemas["o"], tmp / "orchestrator.log", nc,
                                         profile) as orchestrator:
                package = await publish_version(nc, tmp, "1.0.0")
                say(f"registering {devices} devices")
                t0 = time.perf_counter()
                await register(nc, ops, run, devices)
                say(f"registered in {time.perf_counter() - t0:.1f}s")
                await quiesce(nc)  # e.g. the policy consumer has seen every DeviceAccepted

                key = await ops.call("orchestrator", "public_key", GetPublicKey(), SigningKey)
                fleet = SimulatedFleet(agents_nc, DesiredVerifier(key.public_key_b64))
                await fleet.start()
                if upgrade:
                    # Every device gets 1.0.0 the way a real fleet does (a completed rollout:
                    # desired state assigned by the orchestrator), then the measured upgrade.
                    first = await timed_rollout(nc, ops, fleet, run, f"bench-{run}-v1", package,
                                                orchestrator.pid)
                    package = await publish_version(nc, tmp, "2.0.0")
                    await quiesce(nc)
                rollout_id = f"bench-{run}"
                timed = await timed_rollout(nc, ops, fleet, run, rollout_id, package, orchestrator.pid)
                seconds, start, end, view = timed["seconds"], timed["start"], timed["end"], timed["view"]
                await fleet.stop()
                # `get` replies with the first page of the rollout's devices (NATS max payload: 1 MB).
                reply = await nc.request("sdv.cmd.orchestrator.get", encode(RolloutRef(rollout_id)),
                                         timeout=60)
                get_bytes = len(reply.data)

                pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
                rows = await pool.fetch(
                    f"SELECT type, data, occurred_at FROM {schemas['o']}.events WHERE stream_id = $1 "
                    "ORDER BY version", stream_id("rollout", rollout_id))
                largest = await pool.fetchrow(
                    f"SELECT type, length(data) AS bytes FROM {schemas['o']}.events "
                    "ORDER BY length(data) DESC LIMIT 1")
                await pool.close()
                say(f"largest event stored: {largest['bytes']} bytes ({largest['type']}); "
                    f"NATS max payload {MAX_PAYLOAD}, store limit {MAX_EVENT_BYTES}")
                events = len(rows)
                waves: dict[int, list[float]] = {}
                for row in rows:
                    short = row["type"].split(".")[1]
                    if short in ("WaveStarted", "WaveCompleted"):
                        index = msgspec.json.decode(row["data"])["wave"]
                        waves.setdefault(index, []).append(row["occurred_at"].timestamp())
                waves_s = [round(t[1] - t[0], 3) for _, t in sorted(waves.items()) if len(t) == 2]
                sample = next(r for r in rows if r["type"].startswith("orchestrator.DeviceTargeted"))
                payload = encode(Envelope(
                    event_id=uuid.uuid4(), stream_id=stream_id("rollout", rollout_id), version=3,
                    type=sample["type"], schema_version=1, occurred_at=datetime.now(UTC),
                    data=msgspec.json.decode(sample["data"], type=DeviceTargeted)))
                say(f"raw baseline: {events} js.publish_async of {len(payload)} bytes")
                raw_s = await raw_publish(nc, run, events, payload)
                say(f"rollout {seconds:.2f}s vs raw {raw_s:.2f}s: ratio {seconds / raw_s:.1f}")
        finally:
            await agents_nc.close()
            await nc.drain()
    cpu = timed["cpu"]
    result = {
        "bench": "rollout", "devices": devices, "upgrade": upgrade, "seconds": round(seconds, 3),
        "devices_per_s": round(devices / seconds, 1), "events_appended": events,
        "facts_published": timed["facts"], "raw_publish_s": round(raw_s, 3),
        "ratio": round(seconds / raw_s, 1), "plan_s": round(timed["plan_s"], 3),
        "waves": [w.size for w in view.waves],
        "waves_s": waves_s, "desired_docs_seen": fleet.docs, "untrusted_docs": fleet.untrusted,
        "last_desired_doc_s": round(timed["last_doc"] - start, 3),
        "after_last_doc_s": round(end - timed["last_doc"], 3),
        "get_reply_bytes": get_bytes, "orchestrator_cpu_s": round(cpu, 2), "orchestrator_cpu_pct": round(100 * cpu / seconds, 1),
        "max_event_bytes": largest["bytes"], "max_event_type": largest["type"],
        "goal_s": GOAL_S * devices / GOAL_DEVICES, "goal_met": seconds <= GOAL_S * devices / GOAL_DEVICES,
    }
    if first is not None:
        result["first_rollout_s"] = round(first["seconds"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 devices instead of 10,000")
    parser.add_argument("--devices", type=int, help="any other fleet size")
    parser.add_argument("--profile", help="run the orchestrator under cProfile, write stats here")
    parser.add_argument("--upgrade", action="store_true",
                        help="every device first gets 1.0.0 by a rollout; measure the upgrade to 2.0.0")
    args = parser.parse_args()
    devices = args.devices or (1_000 if args.quick else 10_000)
    result = asyncio.run(bench(devices, args.profile, args.upgrade))
    if args.profile and Path(args.profile).exists():
        stats = pstats.Stats(args.profile)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
