"""Event-store benchmark: sdv_events against raw asyncpg / nats-py baselines, same run, same servers.

    .venv/bin/python bench/event_store.py [--quick]

Starts its own PostgreSQL and NATS (sdv_events.servers) unless SDV_DATABASE_URL / SDV_NATS_URL
are set, works in fresh schemas / a fresh raw stream and removes them at the end. Prints a table
and, as the last line, one JSON object with the figures (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import nats
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from rich.console import Console
from rich.table import Table

from sdv_events.codec import encode, encode_metadata
from sdv_events.envelope import Metadata
from sdv_events.ids import uuid7
from sdv_events.logs import configure_logging
from sdv_events.provisioning import DUPLICATE_WINDOW_S, provision
from sdv_events.registry import event
from sdv_events.relay import Relay, message_of
from sdv_events.servers import NatsServer, PostgresServer
from sdv_events.store import EventStore

console = Console(width=None if sys.stdout.isatty() else 110)


@event("bench.Thing")
class Thing(msgspec.Struct, frozen=True):
    device_id: str
    seq: int
    value: float
    note: str


@dataclass(frozen=True)
class Sizes:
    single_n: int          # sequential single-event appends (and as many raw inserts)
    batch_events: int      # events per batched append call / rows per executemany
    batch_tasks: int       # concurrent appenders
    batch_total: int       # events (rows) per round of the batched phase
    batch_rounds: int      # alternating raw / library rounds
    fold_len: int          # length of the folded stream
    fold_reps: int
    relay_n: int           # events relayed (and raw messages published) in all
    relay_rounds: int      # alternating raw / relay rounds, relay_n / relay_rounds each
    writers_each: int      # single-event appends per writer in the 16-writer phase


QUICK = Sizes(single_n=1000, batch_events=500, batch_tasks=4, batch_total=40_000, batch_rounds=2,
              fold_len=10_000, fold_reps=7, relay_n=20_000, relay_rounds=2, writers_each=250)
FULL = Sizes(single_n=5000, batch_events=500, batch_tasks=4, batch_total=150_000, batch_rounds=3,
             fold_len=100_000, fold_reps=7, relay_n=100_000, relay_rounds=4, writers_each=1000)

RAW_TABLE = """
CREATE TABLE {schema}.raw_events (
    global_position bigserial   PRIMARY KEY,
    stream_id       text        NOT NULL,
    version         integer     NOT NULL,
    event_id        uuid        NOT NULL UNIQUE,
    type            text        NOT NULL,
    data            bytea       NOT NULL,
    metadata        bytea       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    UNIQUE (stream_id, version)
)
"""
RAW_INSERT = (
    "INSERT INTO {schema}.raw_events (stream_id, version, event_id, type, data, metadata, occurred_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
RAW_COPY_COLUMNS = ["stream_id", "version", "event_id", "type", "data", "metadata", "occurred_at"]
# The columns and order of EventStore.read_stream, without the decoding.
RAW_READ = (
    "SELECT global_position, stream_id, version, event_id, type, schema_version, data, metadata, "
    "occurred_at FROM {schema}.events WHERE stream_id = $1 AND version >= $2 ORDER BY version"
)
TYPE_NAME = "bench.Thing.v1"
META = Metadata(correlation_id="bench-correlation", actor="bench")
META_BYTES = encode_metadata(META)


def thing(i: int) -> Thing:
    return Thing(device_id=f"dev-{i % 997:04d}", seq=i, value=i * 0.5, note="bench payload " * 4)


def raw_row(stream_id: str, version: int, i: int) -> tuple[object, ...]:
    return (stream_id, version, uuid7(), TYPE_NAME, encode(thing(i)), META_BYTES, datetime.now(UTC))


def check(ok: bool, what: str) -> None:
    """The bench's own sanity checks (kept under `python -O`, unlike assert)."""
    if not ok:
        raise RuntimeError(what)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Ctx:
    dsn: str
    nats_url: str
    run: str                 # unique per run: schema, stream category and raw stream names
    sizes: Sizes
    store: EventStore        # schema bench_<run>: phases 1-3
    relay_store: EventStore  # schema bench_<run>_relay: phase 4 only
    writers_store: EventStore  # schema bench_<run>_w16: phase 5 only
    raw_pool: asyncpg.Pool
    nc: Any

    @property
    def category(self) -> str:
        return f"bench_{self.run}"

    def stream(self, name: str) -> str:
        return f"{self.category}-{name}"


# --- 1. single-event appends -------------------------------------------------------------


async def single_appends(ctx: Ctx) -> dict[str, float]:
    n = ctx.sizes.single_n
    streams = [ctx.stream(f"single-{k}") for k in range(100)]
    versions = dict.fromkeys(streams, 0)
    raw_sql = RAW_INSERT.format(schema=ctx.store.schema)
    lib_ms: list[float] = []
    raw_ms: list[float] = []
    lib_total = 0.0
    counter = 0

    async def lib_one(record: bool) -> None:
        nonlocal counter, lib_total
        sid = streams[counter % len(streams)]
        body = thing(counter)
        counter += 1
        t0 = time.perf_counter()
        result = await ctx.store.append(sid, versions[sid], [body], metadata=META)
        dt = time.perf_counter() - t0
        versions[sid] = result.next_version
        if record:
            lib_ms.append(dt * 1000)
            lib_total += dt

    async with ctx.raw_pool.acquire() as conn:
        raw_versions = dict.fromkeys(streams, 0)
        raw_counter = 0

        async def raw_one(record: bool) -> None:
            nonlocal raw_counter
            sid = streams[raw_counter % len(streams)]
            raw_versions[sid] += 1
            args = raw_row(sid, raw_versions[sid], raw_counter)
            raw_counter += 1
            t0 = time.perf_counter()
            await conn.execute(raw_sql, *args)
            if record:
                raw_ms.append((time.perf_counter() - t0) * 1000)

        for _ in range(50):  # warm-up: connections, prepared statements, plan caches
            await lib_one(False)
            await raw_one(False)
        # Interleaved blocks so that drift (WAL, checkpoints) hits both sides alike.
        block = 100
        for start in range(0, n, block):
            for _ in range(min(block, n - start)):
                await lib_one(True)
            for _ in range(min(block, n - start)):
                await raw_one(True)
    return {
        "single_append_p50_ms": statistics.median(lib_ms),
        "single_append_p99_ms": pct(lib_ms, 0.99),
        "raw_insert_p50_ms": statistics.median(raw_ms),
        "raw_insert_p99_ms": pct(raw_ms, 0.99),
        "single_appends_per_s": len(lib_ms) / lib_total,
    }


# --- 2. batched appends ------------------------------------------------------------------


async def run_tasks(tasks: int, work: Callable[[int], Awaitable[None]]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    await asyncio.gather(*(work(k) for k in range(tasks)))
    return time.perf_counter() - t0


async def batched_appends(ctx: Ctx) -> dict[str, float]:
    s = ctx.sizes
    calls_per_task = s.batch_total // (s.batch_events * s.batch_tasks)
    per_round = calls_per_task * s.batch_events * s.batch_tasks
    raw_sql = RAW_INSERT.format(schema=ctx.store.schema)
    versions: dict[str, int] = {}
    raw_versions: dict[str, int] = {}
    seq = 0

    # Inputs are built before the clock starts: the library is timed on wrapping, encoding
    # and writing the bodies it is given; the raw side on writing ready-made rows.
    def lib_work(round_: int) -> Callable[[int], Awaitable[None]]:
        nonlocal seq
        # Each task writes two streams of its own, alternating.
        names = {k: [ctx.stream(f"batch-{round_}-{k}-{j}") for j in range(2)]
                 for k in range(s.batch_tasks)}
        batches = []
        for _ in range(s.batch_tasks * calls_per_task):
            batches.append([thing(seq + i) for i in range(s.batch_events)])
            seq += s.batch_events

        async def work(k: int) -> None:
            for c in range(calls_per_task):
                sid = names[k][c % 2]
                bodies = batches[k * calls_per_task + c]
                result = await ctx.store.append(sid, versions.get(sid, 0), bodies, metadata=META)
                versions[sid] = result.next_version
        return work

    def raw_work(round_: int, copy: bool = False) -> Callable[[int], Awaitable[None]]:
        nonlocal seq
        batches: dict[int, list[list[tuple[object, ...]]]] = {}
        for k in range(s.batch_tasks):
            names = [ctx.stream(f"raw{'copy' if copy else 'batch'}-{round_}-{k}-{j}") for j in range(2)]
            batches[k] = []
            for c in range(calls_per_task):
                sid = names[c % 2]
                v = raw_versions.get(sid, 0)
                batches[k].append([raw_row(sid, v + i + 1, seq + i) for i in range(s.batch_events)])
                seq += s.batch_events
                raw_versions[sid] = v + s.batch_events

        async def work(k: int) -> None:
            async with ctx.raw_pool.acquire() as conn:
                for rows in batches[k]:
                    if copy:
                        await conn.copy_records_to_table(
                            "raw_events", schema_name=ctx.store.schema, columns=RAW_COPY_COLUMNS,
                            records=rows)
                    else:
                        await conn.executemany(raw_sql, rows)
        return work

    # Warm-up both paths (plans, pool connections), untimed.
    await run_tasks(s.batch_tasks, lambda k: ctx.store.append(
        ctx.stream(f"warm-{k}"), 0, [thing(i) for i in range(s.batch_events)], metadata=META))

    async def raw_warm(k: int) -> None:
        async with ctx.raw_pool.acquire() as conn:
            await conn.executemany(raw_sql, [raw_row(ctx.stream(f"rawwarm-{k}"), i + 1, i)
                                             for i in range(s.batch_events)])

    await run_tasks(s.batch_tasks, raw_warm)

    lib_time = raw_time = 0.0
    for r in range(s.batch_rounds):  # alternate which side goes first
        if r % 2 == 0:
            raw_time += await run_tasks(s.batch_tasks, raw_work(r))
            lib_time += await run_tasks(s.batch_tasks, lib_work(r))
        else:
            lib_time += await run_tasks(s.batch_tasks, lib_work(r))
            raw_time += await run_tasks(s.batch_tasks, raw_work(r))
    total = per_round * s.batch_rounds
    # Context only (table, not JSON): the same rows by COPY, PostgreSQL's bulk-load ceiling.
    copy_time = await run_tasks(s.batch_tasks, raw_work(s.batch_rounds, copy=True))
    return {"append_events_per_s": total / lib_time, "raw_executemany_rows_per_s": total / raw_time,
            "raw_copy_rows_per_s": per_round / copy_time}


# --- 3. full-stream fold -----------------------------------------------------------------


async def fold(ctx: Ctx) -> dict[str, float]:
    s = ctx.sizes
    sid = ctx.stream("fold")
    version = 0
    for start in range(0, s.fold_len, 500):
        bodies = [thing(start + i) for i in range(min(500, s.fold_len - start))]
        version = (await ctx.store.append(sid, version, bodies, metadata=META)).next_version
    expected_sum = sum(range(s.fold_len))
    raw_sql = RAW_READ.format(schema=ctx.store.schema)
    lib_rates: list[float] = []
    raw_rates: list[float] = []

    async def lib_fold() -> float:
        gc.collect()  # each repetition starts with the same (empty) young generations
        t0 = time.perf_counter()
        total = 0
        for envelope in await ctx.store.read_stream(sid):
            total += envelope.data.seq
        dt = time.perf_counter() - t0
        check(total == expected_sum, f"fold sum {total} != {expected_sum}")
        return s.fold_len / dt

    async def raw_fetch(conn: asyncpg.Connection) -> float:
        gc.collect()
        t0 = time.perf_counter()
        rows = await conn.fetch(raw_sql, sid, 1)
        dt = time.perf_counter() - t0
        check(len(rows) == s.fold_len, f"fetched {len(rows)} rows")
        return s.fold_len / dt

    async with ctx.raw_pool.acquire() as conn:
        await lib_fold()  # warm-up: buffers, plans
        await raw_fetch(conn)
        for _ in range(s.fold_reps):
            raw_rates.append(await raw_fetch(conn))
            lib_rates.append(await lib_fold())
    return {"fold_events_per_s": statistics.median(lib_rates),
            "raw_fetch_rows_per_s": statistics.median(raw_rates)}


# --- 4. relay ------------------------------------------------------------------------------


async def relay_throughput(ctx: Ctx, js: JetStreamContext) -> dict[str, float]:
    s = ctx.sizes
    store = ctx.relay_store
    n_streams = 100
    per_stream = s.relay_n // (n_streams * s.relay_rounds)
    per_round = per_stream * n_streams
    versions = [0] * n_streams
    seq = 0

    async def prefill() -> None:  # untimed: the next per_round events, 100 streams
        nonlocal seq
        for k in range(n_streams):
            for start in range(0, per_stream, 500):
                bodies = [thing(seq + i) for i in range(min(500, per_stream - start))]
                seq += len(bodies)
                result = await store.append(ctx.stream(f"relay-{k}"), versions[k], bodies,
                                            metadata=META)
                versions[k] = result.next_version

    await prefill()
    # A message as the relay builds it, to give the raw publisher the same sizes.
    async with store.pool.acquire() as conn:
        sample = await conn.fetchrow(
            "SELECT global_position, stream_id, version, event_id, type, schema_version, data, "
            f"metadata, occurred_at FROM {store.schema}.events ORDER BY global_position LIMIT 1")
    if sample is None:
        raise RuntimeError("no event to sample")
    _, payload, sample_headers = message_of(sample)
    fixed_headers = {k: v for k, v in sample_headers.items() if k != "Nats-Msg-Id"}

    # Raw baseline: publish_async, up to the context's 4000 in flight, into a file stream
    # configured like SDV_EVENTS (limits, file storage, same duplicate window).
    raw_stream = f"BENCH_RAW_{ctx.run.upper()}"
    raw_root = f"bench.raw.{ctx.run}"
    subjects = [f"{raw_root}.s{k}.Thing" for k in range(n_streams)]
    await js.add_stream(StreamConfig(
        name=raw_stream, subjects=[f"{raw_root}.>"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW_S))

    async def raw_publish(count: int) -> float:
        messages = [(subjects[i % n_streams], {"Nats-Msg-Id": str(uuid7()), **fixed_headers})
                    for i in range(count)]  # ready-made, like the rows of the raw inserts
        gc.collect()
        t0 = time.perf_counter()
        futures = []
        for subject, headers in messages:
            futures.append(await js.publish_async(subject, payload, headers=headers))
        acks = await asyncio.gather(*futures)
        dt = time.perf_counter() - t0
        check(not any(a.duplicate for a in acks), "raw publish saw duplicates")
        return dt

    async def relay_drain(count: int) -> float:
        """A relay (same name: it resumes at the checkpoint) draining `count` waiting events."""
        relay = Relay(store, js, name=f"bench-{ctx.run}", batch_size=1000)
        stop = asyncio.Event()
        gc.collect()
        t0 = time.perf_counter()
        task = asyncio.create_task(relay.run(stop))
        while relay.stats.published < count:
            if task.done() or time.perf_counter() - t0 > 120:
                stop.set()
                await task
                raise RuntimeError(f"relay stalled at {relay.stats.published}/{count}")
            await asyncio.sleep(0.002)
        dt = time.perf_counter() - t0
        stop.set()
        await task
        check(relay.stats.duplicates == 0 and relay.stats.published == count, repr(relay.stats))
        return dt

    relay_time = raw_time = 0.0
    try:
        await raw_publish(1000)  # warm-up
        for r in range(s.relay_rounds):  # alternate which side goes first
            if r:
                await prefill()
            if r % 2 == 0:
                raw_time += await raw_publish(per_round)
                relay_time += await relay_drain(per_round)
            else:
                relay_time += await relay_drain(per_round)
                raw_time += await raw_publish(per_round)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(raw_stream)
    n = per_round * s.relay_rounds
    return {
        "relay_events_per_s": n / relay_time,
        "raw_publish_async_per_s": n / raw_time,
        "relay_message_bytes": len(payload),
    }


# --- 5. sixteen concurrent writers, relay running ------------------------------------------
WRITERS = 16


async def concurrent_writers(ctx: Ctx, js: JetStreamContext) -> dict[str, float]:
    """16 tasks appending one event per call (what command handlers do) to streams of their
    own while the relay publishes: appends/s against 16 tasks of raw single-row INSERTs, and
    the relay's lag — from an append returning to its event arriving on the bus — p50/p99.
    (Appends of one schema commit one at a time: the price of a cursor that never skips.)"""
    s = ctx.sizes
    store = ctx.writers_store
    raw_sql = RAW_INSERT.format(schema=ctx.store.schema)
    appended_at: dict[str, float] = {}
    arrived_at: dict[str, float] = {}
    total = WRITERS * s.writers_each
    all_arrived = asyncio.Event()
    subject = f"sdv.evt.{ctx.category}w.>"

    async def on_msg(msg: Any) -> None:
        if msg.headers:
            arrived_at[msg.headers["Nats-Msg-Id"]] = time.perf_counter()
            if len(arrived_at) >= total:
                all_arrived.set()

    sub = await ctx.nc.subscribe(subject, cb=on_msg)
    relay = Relay(store, js, name=f"bench-w-{ctx.run}", batch_size=1000)
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))

    async def lib_writer(k: int) -> None:
        sid = f"{ctx.category}w-{k}"
        version = 0
        for i in range(s.writers_each):
            result = await store.append(sid, version, [thing(i)], metadata=META)
            appended_at[str(result.events[0].event_id)] = time.perf_counter()
            version = result.next_version

    async def raw_writer(k: int) -> None:
        rows = [raw_row(f"w16-{ctx.run}-{k}", i + 1, i) for i in range(s.writers_each)]
        async with ctx.raw_pool.acquire() as conn:
            for row in rows:
                await conn.execute(raw_sql, *row)

    try:
        lib_s = await run_tasks(WRITERS, lib_writer)
        raw_s = await run_tasks(WRITERS, raw_writer)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_arrived.wait(), 60)
        missing = set(appended_at) - set(arrived_at)
        check(not missing, f"{len(missing)} appended events never reached the bus")
    finally:
        stop.set()
        await relay_task
        await sub.unsubscribe()
    # An event can arrive before its writer resumes after the append returned: lag 0 then.
    lags = [max(0.0, arrived_at[i] - t) * 1000 for i, t in appended_at.items()]
    return {
        "appends_16_writers_per_s": total / lib_s,
        "raw_inserts_16_writers_per_s": total / raw_s,
        "relay_lag_p50_ms": statistics.median(lags),
        "relay_lag_p99_ms": pct(lags, 0.99),
    }


# --- harness -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[tuple[str, str]]:
    """(database url, nats url): from the environment, or servers of our own until exit."""
    with contextlib.ExitStack() as stack:
        dsn = os.environ.get("SDV_DATABASE_URL") or stack.enter_context(PostgresServer()).url
        nats_url = os.environ.get("SDV_NATS_URL") or stack.enter_context(NatsServer()).url
        yield dsn, nats_url


async def bench(sizes: Sizes) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    schema = f"bench_{run}"
    async with servers() as (dsn, nats_url), contextlib.AsyncExitStack() as stack:
        raw_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max(sizes.batch_tasks + 1, WRITERS))
        stack.push_async_callback(raw_pool.close)
        for name in (schema, f"{schema}_relay", f"{schema}_w16"):  # pushed first, run last: after the stores close
            stack.push_async_callback(raw_pool.execute, f"DROP SCHEMA IF EXISTS {name} CASCADE")
        store = await EventStore.open(dsn, schema, max_size=10)
        stack.push_async_callback(store.close)
        relay_store = await EventStore.open(dsn, f"{schema}_relay", max_size=4)
        stack.push_async_callback(relay_store.close)
        writers_store = await EventStore.open(dsn, f"{schema}_w16", max_size=WRITERS + 2)
        stack.push_async_callback(writers_store.close)
        nc = await nats.connect(nats_url, name=f"bench-{run}")
        stack.push_async_callback(nc.drain)
        js = nc.jetstream()
        ctx = Ctx(dsn, nats_url, run, sizes, store, relay_store, writers_store, raw_pool, nc)

        # Our relayed events stay on SDV_EVENTS (it denies purges); its retention ages them out.
        await raw_pool.execute(RAW_TABLE.format(schema=schema))
        await provision(js)
        figures: dict[str, float] = {}
        phases: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
            ("single appends", lambda: single_appends(ctx)),
            ("batched appends", lambda: batched_appends(ctx)),
            ("fold", lambda: fold(ctx)),
            ("relay", lambda: relay_throughput(ctx, js)),
            ("16 writers", lambda: concurrent_writers(ctx, js)),
        ]
        for name, phase in phases:
            t0 = time.perf_counter()
            figures.update(await phase())
            console.print(f"[dim]{name}: {time.perf_counter() - t0:.1f}s, "
                          f"load average {os.getloadavg()[0]:.2f}[/dim]")
        return figures


def report(f: dict[str, float], sizes: Sizes) -> dict[str, object]:
    out: dict[str, object] = {
        "bench": "event_store",
        "append_ratio": f["append_events_per_s"] / f["raw_executemany_rows_per_s"],
        "fold_ratio": f["fold_events_per_s"] / f["raw_fetch_rows_per_s"],
        "relay_ratio": f["relay_events_per_s"] / f["raw_publish_async_per_s"],
        "writers_16_ratio": f["appends_16_writers_per_s"] / f["raw_inserts_16_writers_per_s"],
    }
    for key in ["append_events_per_s", "raw_executemany_rows_per_s", "fold_events_per_s",
                "raw_fetch_rows_per_s", "relay_events_per_s", "raw_publish_async_per_s",
                "single_append_p50_ms", "single_append_p99_ms", "raw_insert_p50_ms",
                "raw_insert_p99_ms", "single_appends_per_s", "appends_16_writers_per_s",
                "raw_inserts_16_writers_per_s", "relay_lag_p50_ms", "relay_lag_p99_ms"]:
        out[key] = f[key]
    out = {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}

    table = Table(title="sdv_events event store vs raw baselines (same run)",
                  caption=f"{os.cpu_count()} CPUs, 1-min load average now {os.getloadavg()[0]:.2f}")
    for col in ("figure", "sdv_events", "raw baseline", "ratio"):
        table.add_column(col, justify="left" if col == "figure" else "right")

    def ratio_cell(r: float) -> str:
        return f"[{'green' if r >= 0.5 else 'red'}]{r:.2f}[/]"

    table.add_row(f"single append p50 / p99 (ms) — {sizes.single_n} sequential",
                  f"{f['single_append_p50_ms']:.3f} / {f['single_append_p99_ms']:.3f}",
                  f"{f['raw_insert_p50_ms']:.3f} / {f['raw_insert_p99_ms']:.3f}", "")
    table.add_row("single appends/s", f"{f['single_appends_per_s']:,.0f}", "", "")
    table.add_row(f"batched append ({sizes.batch_events}/call, {sizes.batch_tasks} tasks) events/s",
                  f"{f['append_events_per_s']:,.0f}", f"{f['raw_executemany_rows_per_s']:,.0f}",
                  ratio_cell(out["append_ratio"]))  # type: ignore[arg-type]
    table.add_row("  (context: COPY of the same 500-row batches, rows/s)", "",
                  f"{f['raw_copy_rows_per_s']:,.0f}", "")
    table.add_row(f"fold of a {sizes.fold_len:,}-event stream, events/s",
                  f"{f['fold_events_per_s']:,.0f}", f"{f['raw_fetch_rows_per_s']:,.0f}",
                  ratio_cell(out["fold_ratio"]))  # type: ignore[arg-type]
    table.add_row(f"relay → JetStream ({sizes.relay_n:,} events, "
                  f"{int(f['relay_message_bytes'])} B payload), events/s",
                  f"{f['relay_events_per_s']:,.0f}", f"{f['raw_publish_async_per_s']:,.0f}",
                  ratio_cell(out["relay_ratio"]))  # type: ignore[arg-type]
    table.add_row(f"{WRITERS} writers, one event per append, appends/s (relay running)",
                  f"{f['appends_16_writers_per_s']:,.0f}", f"{f['raw_inserts_16_writers_per_s']:,.0f}",
                  ratio_cell(out["writers_16_ratio"]))  # type: ignore[arg-type]
    table.add_row("  relay lag under that load, append → on the bus, p50 / p99 (ms)",
                  f"{f['relay_lag_p50_ms']:.1f} / {f['relay_lag_p99_ms']:.1f}", "", "")
    console.print(table)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING")
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    figures = asyncio.run(bench(sizes))
    out = report(figures, sizes)
    console.print(f"[dim]total {time.perf_counter() - started:.1f}s[/dim]")
    sys.stdout.flush()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
