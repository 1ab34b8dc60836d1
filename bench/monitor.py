"""Monitor benchmark (issue #12): projection catch-up, SSE fan-out and `/api/devices`, each
beside a raw baseline measured in the same run, on the same servers.

    .venv/bin/python bench/monitor.py --quick   # 34,012 events, about 1.5 minutes
    .venv/bin/python bench/monitor.py           # 100,060 events, about 3 minutes
    .venv/bin/python bench/monitor.py --quick --catchup-only --profile /tmp/monitor.prof

Starts its own NATS and PostgreSQL (`sdv_events.servers`) unless SDV_DATABASE_URL names an
existing PostgreSQL (then its schema is dropped at the end) or, with `--shared-nats`,
SDV_NATS_URL an existing NATS (its consumers are deleted at the end, but its events stay on
SDV_EVENTS, which denies purges: every consumer on that server sees them). The monitor runs as a child process (`python -m sdv_monitor`,
schema `bench_<run>_m`, its HTTP API on a free port), so its CPU is its own and can be read from
/proc. No other service runs: the bench publishes their events to JetStream `SDV_EVENTS`
itself, as their relays do (envelope JSON, `Nats-Msg-Id` = event id, gap-free streams from
version 1). At the monitor's first start its read model is built from the owners' histories;
`sdv.cmd.{registry,orchestrator,packager}.history` are answered by a stand-in with an empty
page (their stores hold nothing yet). A gap would be healed from those histories: the stand-in
would then answer nothing and the catch-up would not finish, so the streams must stay gap-free.

1. Catch-up: the monitor starts once (empty read model, checkpoint at the stream's end) and
   stops. The bench publishes the recorded events: 10,000 devices admitted and online (3
   events each with `--quick`: announced, accepted, came online; 4 without: pre-authorised
   first), then completed canary rollouts (1% / 10% / 100%, every device succeeding: 1 rollout
   to 2,000 devices with `--quick`, 3 rollouts to all 10,000 without), each after a
   PackagePublished. A raw pull consumer (child process) reads the same messages; the monitor
   restarts and its projection (`monitor_views`) catches up: from its durable consumer being
   created to nothing pending or unacked (acks follow the commit). The raw consumer runs
   before and after the monitor with one filter (`sdv.evt.>`), and once with the monitor's six
   filter subjects.
2. SSE: 200 clients stream `/api/stream?rollout=B` and 200 core-NATS subscribers (one
   connection each) subscribe to rollout A's subjects, all in one child process whose
   connections are parsed as bytes arrive (asyncio protocols, no task per message). The bench
   publishes DeviceTargeted events to A and B in alternating blocks of 25 at a fixed pace, each
   carrying its send time (`occurred_at`); latency = receipt - send, over every (event, client)
   pair, after a warm-up that reached every client.
3. `/api/devices` with the 10,000 devices: sequential requests (the first page of 100, and
   `status=accepted&online=true`), interleaved with the same SQL run by asyncpg directly and
   with `/healthz`.

The last printed line is one JSON object; bench/README.md describes every key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import nats
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.table import Table

from sdv_events.bus.rpc import ReplyOk
from sdv_events.codec import encode
from sdv_events.envelope import Envelope
from sdv_events.history import HistoryPage
from sdv_events.provisioning import EVENTS_STREAM, provision
from sdv_events.registry import default_registry
from sdv_events.schemas.devices import (
    Capabilities,
    DeviceAccepted,
    DeviceAnnounced,
    DeviceCameOnline,
    DevicePreauthorized,
)
from sdv_events.schemas.packages import PackageInfo, PackagePublished
from sdv_events.schemas.rollouts import (
    DevicesPlanned,
    DeviceSucceeded,
    DeviceTargeted,
    PlannedDevice,
    RolloutCompleted,
    RolloutCreated,
    RolloutPlanned,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
    WaveCompleted,
    WaveStarted,
)
from sdv_events.servers import NatsServer, PostgresServer, free_port
from sdv_events.service import Ping, ServiceHealth
from sdv_events.subjects import event_subject

console = Console(width=None if sys.stdout.isatty() else 120)
APP = "bench-app"
VIEWS = "monitor_views"
# The monitor's projection reads these categories whole (projections/views.py).
VIEW_SUBJECTS = ["sdv.evt.device.>", "sdv.evt.rollout.>", "sdv.evt.package.>", "sdv.evt.policy.>",
                 "sdv.evt.facts.>", "sdv.evt.alert.>"]
OWNERS = ("registry", "orchestrator", "packager")
CAPS = Capabilities(hardware_type="linux-generic", arch="x86_64", runtimes=["native"],
                    python_version="3.11.9", agent_version="bench", memory_mb=4096, storage_mb=32768)
PUBLIC_KEY = "U" + "A" * 55
ONE_FILTER, VIEW_FILTERS = "one filter", "the monitor's filters"
GOALS = {"catchup_ratio": 0.3, "sse_p99_ms": 100.0, "api_devices_p99_ms": 50.0}


@dataclass(frozen=True)
class Sizes:
    devices: int  # in the fleet read model (admitted and online)
    device_events: int  # per device: 3 (announced, accepted, online) or 4 (pre-authorised first)
    rollouts: int  # canary rollouts 1% → 10% → 100%, each completed
    rollout_devices: int  # devices per rollout
    sse_clients: int
    sse_events: int  # per side (SSE and raw NATS), after the warm-up
    sse_rate: float  # events published per second
    api_requests: int  # per query and per side


QUICK = Sizes(devices=10_000, device_events=3, rollouts=1, rollout_devices=2_000, sse_clients=200,
              sse_events=200, sse_rate=20.0, api_requests=300)
FULL = Sizes(devices=10_000, device_events=4, rollouts=3, rollout_devices=10_000, sse_clients=200,
             sse_events=500, sse_rate=20.0, api_requests=1_000)


def say(text: str) -> None:
    console.print(f"[{time.strftime('%H:%M:%S')}] {text} (load {os.getloadavg()[0]:.2f})")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the events other services would have written ---------------------------------------------


class Events:
    """Envelopes as services' relays publish them: (subject, payload, headers)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, dict[str, str]]] = []
        self.versions: dict[str, int] = {}

    def add(self, stream_id: str, body: msgspec.Struct, at: datetime | None = None) -> None:
        self.messages.append(message(stream_id, self.next_version(stream_id), body, at))

    def next_version(self, stream_id: str) -> int:
        version = self.versions.get(stream_id, 0) + 1
        self.versions[stream_id] = version
        return version


def message(stream_id: str, version: int, body: msgspec.Struct, at: datetime | None = None
            ) -> tuple[str, bytes, dict[str, str]]:
    type_name, schema_version = default_registry.describe(body)
    envelope = Envelope(event_id=uuid.uuid4(), stream_id=stream_id, version=version, type=type_name,
                        schema_version=schema_version, occurred_at=at or datetime.now(UTC), data=body,
                        actor="bench")
    headers = {"Nats-Msg-Id": str(envelope.event_id), "Sdv-Type": type_name,
               "Sdv-Stream": stream_id, "Sdv-Version": str(version)}
    return event_subject(stream_id, type_name), encode(envelope), headers


def package(run: str, version: str) -> PackageInfo:
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{version}").hex * 2
    return PackageInfo(name=APP, version=version, digest=digest, size=2800,
                       object_name=f"{APP}/{digest}", manifest_digest=digest, signature="c2ln",
                       key_id="bench", channel="stable", runtime="native", entry_point="main.py",
                       python_version="3.11")


def device_ids(run: str, n: int) -> list[str]:
    return [f"dev-{run}-{i:05d}" for i in range(n)]


def fleet_events(run: str, sizes: Sizes) -> Events:
    """Devices admitted and online, then completed rollouts to them, gap-free per stream."""
    events = Events()
    ids = device_ids(run, sizes.devices)
    now = datetime.now(UTC)
    if sizes.device_events == 4:
        for i, d in enumerate(ids):
            events.add(f"device-{d}", DevicePreauthorized(d, "0" * 64, {"fleet": run, "zone": f"z{i % 10}"}))
    for d in ids:
        events.add(f"device-{d}", DeviceAnnounced(d, PUBLIC_KEY, CAPS))
    by = "preauthorized" if sizes.device_events == 4 else "fleet_token"
    for d in ids:
        events.add(f"device-{d}", DeviceAccepted(d, PUBLIC_KEY, by))
    for d in ids:
        events.add(f"device-{d}", DeviceCameOnline(d, now))
    for r in range(sizes.rollouts):
        info = package(run, f"1.{r}.0")
        events.add(f"package-{APP}", PackagePublished(info))
        rollout_events(events, f"r{r}-{run}", info, ids[:sizes.rollout_devices], now)
    return events


def rollout_events(events: Events, rollout_id: str, info: PackageInfo, ids: list[str],
                   now: datetime) -> None:
    """What the orchestrator appends for a canary rollout that succeeds everywhere."""
    sid = f"rollout-{rollout_id}"
    n = len(ids)
    first = max(1, n // 100)
    bounds = [0, first, max(first, n // 10), n]
    events.add(sid, RolloutCreated(
        rollout_id=rollout_id, package=info, target=Target(selector="fleet=bench"),
        strategy=Strategy(kind="canary", waves=["1%", "10%", "100%"]), thresholds=Thresholds(),
        timeouts=Timeouts(), created_at=now, created_by="bench"))
    events.add(sid, RolloutPlanned(devices=n, waves=3, planned_at=now))
    planned = [PlannedDevice(d, w) for w in range(3) for d in ids[bounds[w]:bounds[w + 1]]]
    for chunk, start in enumerate(range(0, n, 1000)):  # the orchestrator's chunks stay under 32 KiB
        events.add(sid, DevicesPlanned(chunk, planned[start:start + 1000]))
    for w in range(3):
        wave = ids[bounds[w]:bounds[w + 1]]
        events.add(sid, WaveStarted(w, len(wave), now))
        for d in wave:
            events.add(sid, DeviceTargeted(d, w, now))
        for d in wave:
            events.add(sid, DeviceSucceeded(d, w))
        events.add(sid, WaveCompleted(w, len(wave), 0, now))
    events.add(sid, RolloutCompleted(n, 0, now))


async def publish_all(nc: NatsClient, messages: list[tuple[str, bytes, dict[str, str]]]) -> float:
    js = nc.jetstream()
    start = time.perf_counter()
    pending = []
    for subject, payload, headers in messages:
        pending.append(await js.publish_async(subject, payload, headers=headers))
        if len(pending) >= 4000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    return time.perf_counter() - start


# --- the owners' histories, empty before the bench publishes --------------------------------


async def empty_histories(nc: NatsClient) -> list[Any]:
    reply = encode(ReplyOk(result=msgspec.Raw(encode(HistoryPage(events=[], next_after=0, more=False)))))

    async def answer(msg: Any) -> None:
        await msg.respond(reply)

    return [await nc.subscribe(f"sdv.cmd.{owner}.history", cb=answer) for owner in OWNERS]


# --- the monitor as a child process ----------------------------------------------------------


@dataclass
class Monitor:
    env: dict[str, str]
    log: Path
    nc: NatsClient
    proc: asyncio.subprocess.Process | None = None
    profile: str | None = None  # run under cProfile, stats written here on stop

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        with self.log.open("ab") as out:
            prof = ["-m", "cProfile", "-o", self.profile] if self.profile else []
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *prof, "-m", "sdv_monitor", env=self.env, stdout=out,
                stderr=asyncio.subprocess.STDOUT)

    async def health(self) -> ServiceHealth:
        msg = await self.nc.request("sdv.cmd.monitor.ping", encode(Ping()), timeout=5)
        reply = msgspec.json.decode(msg.data)
        return msgspec.convert(reply["result"], ServiceHealth)

    async def ready(self, timeout: float = 120.0) -> ServiceHealth:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.returncode is not None:
                raise RuntimeError(f"the monitor exited; see {self.log}")
            with contextlib.suppress(Exception):
                return await self.health()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the monitor did not answer ping; see {self.log}")
            await asyncio.sleep(0.1)

    async def task(self, name: str) -> dict[str, Any]:
        for task in (await self.health()).tasks:
            if task.name == name:
                return dict(task.detail)
        return {}

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# --- 1. catch-up -----------------------------------------------------------------------------


RAW_CONSUMER_ROLE = "raw-consumer"


async def raw_consumer(url: str, start_seq: int, count: int, name: str, filters: list[str]) -> None:
    """Child process: a durable pull consumer of `filters` from `start_seq`, fetching as the
    runner does (256 a batch, explicit acks), decoding each message's JSON."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_consumer(EVENTS_STREAM, ConsumerConfig(
        durable_name=name, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq,
        ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1024,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None))
    sub = await js.pull_subscribe_bind(name, EVENTS_STREAM)
    decode = msgspec.json.decode
    received = 0
    start = time.perf_counter()
    while received < count:
        for msg in await sub.fetch(256, timeout=10):
            decode(msg.data)
            await msg.ack()
            received += 1
    elapsed = time.perf_counter() - start
    await js.delete_consumer(EVENTS_STREAM, name)
    await nc.close()
    print(json.dumps({"received": received, "seconds": elapsed}), flush=True)


async def run_child(*args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, *args,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:2]} exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def views_consumer(nc: NatsClient, durable: str, after: float) -> Any:
    """The projection's durable once the restarted monitor has (re)created it."""
    js = nc.jetstream()
    while True:
        with contextlib.suppress(Exception):
            info = await js.consumer_info(EVENTS_STREAM, durable)
            if info.created is not None and info.created.timestamp() >= after:
                return info
        await asyncio.sleep(0.02)


async def catch_up(nc: NatsClient, monitor: Monitor, durable: str, count: int) -> dict[str, float]:
    """Restart the monitor; from its projection's consumer being created to nothing pending."""
    js = nc.jetstream()
    spawned = time.time()
    await monitor.start()
    info = await asyncio.wait_for(views_consumer(nc, durable, spawned), 120)
    started = info.created.timestamp()
    cpu0 = cpu_seconds(monitor.pid)
    cpu_at = time.time()
    while True:
        info = await js.consumer_info(EVENTS_STREAM, durable)
        if not info.num_pending and not info.num_ack_pending:
            done = time.time()
            break
        if time.time() - started > 900:
            raise TimeoutError(f"catch-up not done: {info.num_pending} pending")
        await asyncio.sleep(0.05)
    cpu = cpu_seconds(monitor.pid) - cpu0
    seconds = done - started
    return {"seconds": seconds, "per_s": count / seconds, "start_s": started - spawned,
            "cpu_pct": 100 * cpu / (done - cpu_at)}


# --- 2. SSE fan-out ----------------------------------------------------------------------------


CLIENTS_ROLE = "clients"


class Doc(msgspec.Struct):
    stream_id: str
    version: int
    occurred_at: datetime


class Receiver(asyncio.Protocol):
    """One client's connection, parsed as bytes arrive (no task per message, so 200 of them in
    one process cost little): SSE `data:` lines of an HTTP response, or NATS `HMSG` frames.
    Each event is stamped with the time its bytes were read."""

    def __init__(self, kind: str, client: int, on_event: Callable[[str, int, bytes, float], None]) -> None:
        self.kind, self.client, self.on_event = kind, client, on_event
        self.buffer = b""
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if self.kind == "sse":
            self._sse(now)
        else:
            self._nats(now)

    def _sse(self, now: float) -> None:
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                self.on_event("sse", self.client, line[5:], now)
            elif line.startswith(b"HTTP/1.1 ") and not self.ready.done():
                self.ready.set_result(line.split()[1] == b"200")

    def _nats(self, now: float) -> None:
        while (end := self.buffer.find(b"\r\n")) >= 0:
            line = self.buffer[:end]
            if line.startswith((b"HMSG", b"MSG")):
                fields = line.split()
                total = int(fields[-1])
                if len(self.buffer) < end + 2 + total + 2:
                    return  # the rest of the frame is still on its way
                body = self.buffer[end + 2:end + 2 + total]
                headers = int(fields[-2]) if line.startswith(b"HMSG") else 0
                self.buffer = self.buffer[end + 2 + total + 2:]
                self.on_event("nats", self.client, body[headers:], now)
                continue
            self.buffer = self.buffer[end + 2:]
            if line == b"PING":
                assert self.transport is not None
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG" and not self.ready.done():
                self.ready.set_result(True)
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())


async def clients(base: str, url: str, n: int, nats_rollout: str, sse_rollout: str) -> None:
    """Child process: `n` SSE clients of rollout B (`/api/stream?rollout=B`) and `n` core-NATS
    subscribers (one connection each) to rollout A's subjects. Prints `ready`, then `warm <kind>`
    once every receiver of a kind got an event; on `report` (stdin) prints every receipt as
    [client, version, latency_s]."""
    loop = asyncio.get_running_loop()
    decode_doc = msgspec.json.Decoder(Doc).decode
    receipts: dict[str, list[tuple[int, int, float]]] = {"sse": [], "nats": []}
    got: dict[str, set[int]] = {"sse": set(), "nats": set()}
    warm: set[str] = set()

    def on_event(kind: str, client: int, data: bytes, now: float) -> None:
        doc = decode_doc(data)
        receipts[kind].append((client, doc.version, now - doc.occurred_at.timestamp()))
        if kind not in warm:
            got[kind].add(client)
            if len(got[kind]) == n:
                warm.add(kind)
                print(f"warm {kind}", flush=True)

    http = httpx.URL(base)
    nats_host = httpx.URL(url.replace("nats://", "http://"))
    request = (f"GET /api/stream?rollout={sse_rollout} HTTP/1.1\r\nHost: {http.host}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    subscribe = ('CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
                 f"SUB sdv.evt.rollout.{nats_rollout}.> 1\r\nPING\r\n").encode()
    receivers: list[Receiver] = []
    for client in range(n):
        for kind, host, port, hello in (("sse", http.host, http.port, request),
                                         ("nats", nats_host.host, nats_host.port, subscribe)):
            receiver = Receiver(kind, client, on_event)
            transport, _ = await loop.create_connection(lambda r=receiver: r, host, port or 80)  # type: ignore[misc]
            transport.write(hello)
            receivers.append(receiver)
    answers = await asyncio.wait_for(asyncio.gather(*(r.ready for r in receivers)), 60)
    assert all(answers), "a client was refused"
    print("ready", flush=True)
    while (line := await loop.run_in_executor(None, sys.stdin.readline)) and line.strip() != "report":
        pass
    for receiver in receivers:
        assert receiver.transport is not None
        receiver.transport.close()
    print(json.dumps({k: [list(r) for r in v] for k, v in receipts.items()}), flush=True)


@dataclass
class LiveRollout:
    """A rollout stream the bench appends DeviceTargeted events to, one at a time."""

    rollout_id: str
    ids: list[str]
    events: Events

    def next(self) -> tuple[str, bytes, dict[str, str], int]:
        sid = f"rollout-{self.rollout_id}"
        version = self.events.next_version(sid)
        device = self.ids[version % len(self.ids)]
        subject, payload, headers = message(sid, version, DeviceTargeted(device, 0, datetime.now(UTC)))
        return subject, payload, headers, version


async def sse_phase(nc: NatsClient, base: str, nats_url: str, run: str, sizes: Sizes,
                    events: Events) -> dict[str, Any]:
    js = nc.jetstream()
    ids = device_ids(run, sizes.devices)
    info = package(run, "9.0.0")
    live = {kind: LiveRollout(f"live-{kind}-{run}", ids, events) for kind in ("nats", "sse")}
    for rollout in live.values():  # each stream starts at version 1, as the projection requires
        subject, payload, headers = message(f"rollout-{rollout.rollout_id}", events.next_version(
            f"rollout-{rollout.rollout_id}"), RolloutCreated(
                rollout_id=rollout.rollout_id, package=info, target=Target(selector="fleet=bench"),
                strategy=Strategy(kind="all-at-once", waves=["100%"]), thresholds=Thresholds(),
                timeouts=Timeouts(), created_at=datetime.now(UTC), created_by="bench"))
        await js.publish(subject, payload, headers=headers)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--role", CLIENTS_ROLE, base, nats_url, str(sizes.sse_clients),
        live["nats"].rollout_id, live["sse"].rollout_id,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 30)
    assert proc.stdout is not None
    assert proc.stdin is not None
    t0 = time.perf_counter()
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    if line.strip() != b"ready":
        raise RuntimeError(f"clients did not start: {line!r}")
    say(f"{sizes.sse_clients} SSE clients and {sizes.sse_clients} NATS subscribers connected "
        f"in {time.perf_counter() - t0:.1f}s")

    async def publish(kind: str) -> int:
        subject, payload, headers, version = live[kind].next()
        await js.publish(subject, payload, headers=headers)
        return version

    warm: set[str] = set()

    async def read_warm() -> None:
        while len(warm) < 2:
            text = (await proc.stdout.readline()).decode().split()  # type: ignore[union-attr]
            if not text:
                raise RuntimeError("clients exited during the warm-up")
            warm.add(text[1])

    reader = asyncio.create_task(read_warm())
    while not reader.done():  # until every receiver of both kinds has had an event
        for kind in ("nats", "sse"):
            await publish(kind)
        await asyncio.wait({reader}, timeout=0.2)
    reader.result()
    first = {kind: live[kind].events.versions[f"rollout-{live[kind].rollout_id}"] + 1 for kind in live}
    block = 25
    gap = 1.0 / sizes.sse_rate
    published = {"nats": 0, "sse": 0}
    t0 = time.perf_counter()
    while min(published.values()) < sizes.sse_events:
        for kind in ("nats", "sse"):
            for _ in range(min(block, sizes.sse_events - published[kind])):
                await publish(kind)
                published[kind] += 1
                await asyncio.sleep(gap)
    await asyncio.sleep(2.0)  # the last events reach every client
    say(f"published {published} in {time.perf_counter() - t0:.1f}s")
    proc.stdin.write(b"report\n")
    await proc.stdin.drain()
    out = await asyncio.wait_for(proc.stdout.read(), 120)
    await proc.wait()
    receipts = json.loads(out.decode().strip().splitlines()[-1])
    result: dict[str, Any] = {}
    for kind in ("sse", "nats"):
        latencies = [lat * 1000 for _, version, lat in receipts[kind] if version >= first[kind]]
        expected = sizes.sse_events * sizes.sse_clients
        result[kind] = {"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
                        "max": max(latencies), "deliveries": len(latencies),
                        "missed": expected - len(latencies)}
    return result


# --- 3. /api/devices ----------------------------------------------------------------------------


def devices_sql(s: str, where: str) -> tuple[str, str]:
    """The statements `Queries.devices` runs (count, then the page), for the raw baseline."""
    page = f"""
        SELECT d.device_id, d.status, d.online, d.last_seen_at, d.labels::text AS labels,
               coalesce(r.agent_version, d.agent_version) AS agent_version, d.arch, d.hardware_type,
               d.admitted_by, d.updated_at,
               (SELECT count(*) FROM {s}.device_apps a WHERE a.device_id = d.device_id)::int AS apps,
               (SELECT count(*) FROM {s}.device_apps a WHERE a.device_id = d.device_id
                    AND a.state = 'FAILED')::int AS apps_failed
        FROM {s}.devices d LEFT JOIN {s}.reported_devices r ON r.device_id = d.device_id
        WHERE {where} ORDER BY d.device_id LIMIT 100 OFFSET 0"""
    return f"SELECT count(*) FROM {s}.devices d WHERE {where}", page


async def api_phase(base: str, db_url: str, schema: str, sizes: Sizes) -> dict[str, Any]:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    all_sql = devices_sql(schema, "true")
    filtered_sql = devices_sql(schema, "d.status = $1 AND d.online = $2")
    filtered_params = ("accepted", True)

    async def raw(sql: tuple[str, str], *params: Any) -> None:
        async with pool.acquire() as conn:
            await conn.fetchval(sql[0], *params)
            rows = await conn.fetch(sql[1], *params)
            assert len(rows) == 100

    timings: dict[str, list[float]] = {k: [] for k in ("api", "api_filtered", "sql", "sql_filtered",
                                                       "healthz")}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        async def get(path: str, **params: Any) -> None:
            response = await http.get(path, params=params)
            assert response.status_code == 200, (path, response.status_code, response.text[:200])

        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "api": lambda: get("/api/devices"),
            "api_filtered": lambda: get("/api/devices", status="accepted", online="true"),
            "sql": lambda: raw(all_sql),
            "sql_filtered": lambda: raw(filtered_sql, *filtered_params),
            "healthz": lambda: get("/healthz"),
        }
        page = (await http.get("/api/devices", params={"status": "accepted", "online": "true"})).json()
        assert page["total"] == sizes.devices, page["total"]
        for _ in range(20):  # warm-up: connections, prepared statements, caches
            for step in steps.values():
                await step()
        for _ in range(sizes.api_requests):
            for name, step in steps.items():
                t = time.perf_counter()
                await step()
                timings[name].append((time.perf_counter() - t) * 1000)
    await pool.close()
    return {name: {"p50": pct(v, 0.5), "p99": pct(v, 0.99), "mean": statistics.fmean(v)}
            for name, v in timings.items()}


# --- the run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(shared_nats: bool) -> Iterator[tuple[str, str]]:
    """NATS and PostgreSQL: the ones the environment names, else started here. SDV_NATS_URL only with
    `--shared-nats`: SDV_EVENTS denies purges, so the 34,000-100,000 events published here
    would stay there, seen by every consumer on that server, until its retention drops them."""
    with contextlib.ExitStack() as stack:
        if os.environ.get("SDV_NATS_URL") and not shared_nats:
            say("SDV_NATS_URL ignored (see --shared-nats): this bench's events cannot be removed from it")
        nats_url = (os.environ.get("SDV_NATS_URL") if shared_nats else None) or \
            stack.enter_context(NatsServer()).url
        db_url = os.environ.get("SDV_DATABASE_URL") or stack.enter_context(PostgresServer()).url
        yield nats_url, db_url


@contextlib.asynccontextmanager
async def phase(name: str, phases: list[str]) -> AsyncIterator[None]:
    start = time.perf_counter()
    say(f"{name}…")
    yield
    phases.append(f"{name}: {time.perf_counter() - start:.1f} s, load {os.getloadavg()[0]:.2f}")


async def cleanup(nc: NatsClient, db_url: str, schema: str) -> None:
    """What the run leaves on servers it did not start: the monitor's consumers and schema (its
    events stay on SDV_EVENTS, which denies purges)."""
    js = nc.jetstream()
    for info in await js.consumers_info(EVENTS_STREAM):
        if info.name.startswith(f"c_{schema}_"):
            with contextlib.suppress(Exception):
                await js.delete_consumer(EVENTS_STREAM, info.name)
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def bench(sizes: Sizes, catchup_only: bool = False, profile: str | None = None,
                shared_nats: bool = False) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    schema = f"bench_{run}_m"
    durable = f"c_{schema}_{VIEWS}"
    work = Path(tempfile.mkdtemp(prefix="sdv-bench-monitor-"))
    phases: list[str] = []
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    with servers(shared_nats) as (nats_url, db_url):
        nc = await nats.connect(nats_url, max_reconnect_attempts=-1, pending_size=256 * 1024 * 1024)
        js = nc.jetstream()
        await provision(js)
        await empty_histories(nc)
        env = os.environ | {
            "SDV_NATS_URL": nats_url, "SDV_DATABASE_URL": db_url, "SDV_MONITOR_SCHEMA": schema,
            "SDV_MONITOR_HTTP_PORT": str(port), "SDV_LOG_LEVEL": "WARNING",
            # No registry, orchestrator or packager answers ping here: not an alert in this bench.
            "SDV_MONITOR_ALERT_SERVICE_GRACE_S": "86400"}
        monitor = Monitor(env, work / "monitor.log", nc)
        events = fleet_events(run, sizes)
        count = len(events.messages)
        try:
            async with phase("first start (empty read model)", phases):
                await monitor.start()
                await monitor.ready()
                await views_consumer(nc, durable, 0)
                await monitor.stop()
            async with phase(f"publish {count:,} events", phases):
                first_seq = int((await js.stream_info(EVENTS_STREAM)).state.last_seq) + 1
                publish_s = await publish_all(nc, events.messages)
            say(f"published {count:,} events in {publish_s:.1f}s ({count / publish_s:,.0f}/s)")
            raw: dict[str, list[float]] = {ONE_FILTER: [], VIEW_FILTERS: []}

            async def raw_read(label: str) -> None:
                filters = ["sdv.evt.>"] if label == ONE_FILTER else VIEW_SUBJECTS
                async with phase(f"raw pull consumer, {label}", phases):
                    got = await run_child("--role", RAW_CONSUMER_ROLE, nats_url, str(first_seq), str(count),
                                          f"bench_raw_{run}_{sum(map(len, raw.values()))}", *filters)
                raw[label].append(got["received"] / got["seconds"])
                say(f"raw, {label}: {got['received']:,} in {got['seconds']:.2f}s ({raw[label][-1]:,.0f}/s)")

            await raw_read(ONE_FILTER)
            await raw_read(VIEW_FILTERS)
            monitor.profile = profile
            async with phase("monitor catch-up", phases):
                caught = await catch_up(nc, monitor, durable, count)
            say(f"monitor: {count:,} in {caught['seconds']:.2f}s ({caught['per_s']:,.0f}/s), "
                f"CPU {caught['cpu_pct']:.0f}%")
            await raw_read(ONE_FILTER)  # before and after: load from elsewhere falls on both sides
            views = await monitor.task(VIEWS)
            assert views.get("applied") == count, views
            assert not views.get("parked"), views
            assert not views.get("dead_lettered"), views
            result |= catchup_figures(count, sizes, caught, raw, count / publish_s)
            if not catchup_only:
                async with phase("SSE fan-out", phases):
                    result |= sse_figures(await sse_phase(nc, base, nats_url, run, sizes, events), sizes)
                async with phase("/api/devices", phases):
                    result |= api_figures(await api_phase(base, db_url, schema, sizes), sizes)
        finally:
            await monitor.stop()
            await cleanup(nc, db_url, schema)
            await nc.close()
    for line in phases:
        console.print(line)
    if not catchup_only:
        result["goals"] = GOALS
        result["goals_met"] = {"catchup_ratio": result["catchup_ratio"] >= GOALS["catchup_ratio"],
                               "sse_p99_ms": result["sse_p99_ms"] < GOALS["sse_p99_ms"],
                               "api_devices_p99_ms": result["api_devices_p99_ms"] < GOALS["api_devices_p99_ms"]}
    return result


def catchup_figures(count: int, sizes: Sizes, caught: dict[str, float], raws: dict[str, list[float]],
                    publish_per_s: float) -> dict[str, Any]:
    raw, raw_filtered = statistics.fmean(raws[ONE_FILTER]), statistics.fmean(raws[VIEW_FILTERS])
    return {
        "events": count, "devices": sizes.devices, "rollouts": sizes.rollouts,
        "catchup_ratio": round(caught["per_s"] / raw, 3),
        "catchup_events_per_s": round(caught["per_s"], 1),
        "raw_consume_per_s": round(raw, 1),
        "raw_consume_runs_per_s": [round(r, 1) for r in raws[ONE_FILTER]],
        "raw_consume_filtered_per_s": round(raw_filtered, 1),
        "catchup_ratio_filtered": round(caught["per_s"] / raw_filtered, 3),
        "catchup_s": round(caught["seconds"], 2),
        "monitor_start_s": round(caught["start_s"], 2),
        "catchup_cpu_pct": round(caught["cpu_pct"], 1), "publish_per_s": round(publish_per_s, 1),
    }


def sse_figures(sse: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    return {
        "sse_clients": sizes.sse_clients, "sse_events": sizes.sse_events,
        "sse_rate_per_s": sizes.sse_rate,
        "sse_p50_ms": round(sse["sse"]["p50"], 2), "sse_p99_ms": round(sse["sse"]["p99"], 2),
        "sse_max_ms": round(sse["sse"]["max"], 2), "sse_missed": sse["sse"]["missed"],
        "raw_nats_p50_ms": round(sse["nats"]["p50"], 2), "raw_nats_p99_ms": round(sse["nats"]["p99"], 2),
        "raw_nats_max_ms": round(sse["nats"]["max"], 2), "raw_nats_missed": sse["nats"]["missed"],
        "sse_ratio": round(sse["sse"]["p99"] / sse["nats"]["p99"], 2),
    }


def api_figures(api: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    a, s = api["api"], api["sql"]
    return {
        "api_devices_p50_ms": round(a["p50"], 2), "api_devices_p99_ms": round(a["p99"], 2),
        "api_devices_filtered_p50_ms": round(api["api_filtered"]["p50"], 2),
        "api_devices_filtered_p99_ms": round(api["api_filtered"]["p99"], 2),
        "raw_sql_p50_ms": round(s["p50"], 2), "raw_sql_p99_ms": round(s["p99"], 2),
        "raw_sql_filtered_p50_ms": round(api["sql_filtered"]["p50"], 2),
        "raw_sql_filtered_p99_ms": round(api["sql_filtered"]["p99"], 2),
        "healthz_p50_ms": round(api["healthz"]["p50"], 2), "healthz_p99_ms": round(api["healthz"]["p99"], 2),
        "api_ratio": round(a["p99"] / s["p99"], 2),
        "api_requests": sizes.api_requests,
    }


def table(result: dict[str, Any]) -> Table:
    t = Table("figure", "monitor", "raw baseline", "ratio", "goal")
    t.add_row(f"catch-up of {result['events']:,} events, events/s", f"{result['catchup_events_per_s']:,}",
              f"{result['raw_consume_per_s']:,} (pull consumer, sdv.evt.>)", f"{result['catchup_ratio']}",
              "≥ 0.3")
    t.add_row("", "", f"{result['raw_consume_filtered_per_s']:,} (the monitor's 6 filters)",
              f"{result['catchup_ratio_filtered']}", "")
    if "sse_p99_ms" not in result:
        return t
    t.add_row(f"SSE, {result['sse_clients']} clients, p50 / p99 ms",
              f"{result['sse_p50_ms']} / {result['sse_p99_ms']}",
              f"{result['raw_nats_p50_ms']} / {result['raw_nats_p99_ms']} (core NATS)",
              f"{result['sse_ratio']}", "p99 < 100")
    t.add_row("/api/devices, p50 / p99 ms", f"{result['api_devices_p50_ms']} / {result['api_devices_p99_ms']}",
              f"{result['raw_sql_p50_ms']} / {result['raw_sql_p99_ms']} (same SQL)",
              f"{result['api_ratio']}", "p99 < 50")
    t.add_row("/api/devices?status=accepted&online=true",
              f"{result['api_devices_filtered_p50_ms']} / {result['api_devices_filtered_p99_ms']}",
              f"{result['raw_sql_filtered_p50_ms']} / {result['raw_sql_filtered_p99_ms']}", "", "")
    t.add_row("/healthz, p50 / p99 ms", f"{result['healthz_p50_ms']} / {result['healthz_p99_ms']}", "", "", "")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="≈34k events instead of ≈100k")
    parser.add_argument("--catchup-only", action="store_true", help="only the catch-up phase")
    parser.add_argument("--profile", help="run the restarted monitor under cProfile, write stats here")
    parser.add_argument("--shared-nats", action="store_true",
                        help="use SDV_NATS_URL although this bench's events stay on its SDV_EVENTS")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == RAW_CONSUMER_ROLE:
        url, start_seq, count, name, *filters = args.args
        asyncio.run(raw_consumer(url, int(start_seq), int(count), name, filters))
        return
    if args.role == CLIENTS_ROLE:
        base, url, n, nats_rollout, sse_rollout = args.args
        asyncio.run(clients(base, url, int(n), nats_rollout, sse_rollout))
        return
    started = time.perf_counter()
    result = asyncio.run(bench(QUICK if args.quick else FULL, args.catchup_only, args.profile, args.shared_nats))
    console.print(table(result))
    if args.profile and Path(args.profile).exists():
        stats = pstats.Stats(args.profile)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(30)
    console.print(f"total {time.perf_counter() - started:.0f} s")
    print(json.dumps({"bench": "monitor", "mode": "quick" if args.quick else "full", **result}))


if __name__ == "__main__":
    main()
