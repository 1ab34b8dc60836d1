"""Registry benchmark: admissions and heartbeats of a simulated fleet against raw NATS baselines
measured in the same run, on the same servers.

    .venv/bin/python bench/registry.py [--quick]

Starts its own NATS in operator mode (a fresh chain of trust) and PostgreSQL (unless
SDV_DATABASE_URL is set; the registry then works in a fresh schema), runs the registry as a
child process (`python -m sdv_registry`) so its CPU can be read from /proc, and prints a table
and, as the last line, one JSON object:

- `admissions_per_s`: devices announced and accepted with the fleet token (the signed exchange: a nonce, then the announce signed with the device key; two requests each,
  reply holds the minted JWT), `concurrency` in flight; `raw_request_reply_per_s`: a raw nats-py
  echo responder (child process) under the same load; `admission_cpu_pct`: registry CPU.
- `operator_admissions_per_s`: announce → `accept` command → announce (credentials).
- `heartbeats_per_s`: `sdv.hb.<id>` messages the registry handled per second while one
  connection published round-robin over all devices as fast as it could for `heartbeat_s`
  (counted by the registry, until the count stops moving); `raw_heartbeats_per_s`: a raw
  nats-py subscriber (child process) counting the same publish pattern; `heartbeat_cpu_pct`;
  `online_transitions`: CameOnline commands the registry ran during that phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import nkeys
from nats.aio.client import Client as NatsClient
from rich.console import Console
from rich.table import Table

from sdv_events.auth import (
    ENROL_INBOX_PREFIX,
    Role,
    Trust,
    new_keypair,
    public_key,
    raw_creds,
    render_server_config,
)
from sdv_events.bus import CommandClient
from sdv_events.codec import encode
from sdv_events.enrolment import announce as signed_announce
from sdv_events.schemas.devices import (
    AcceptDevice,
    Announce,
    AnnounceReply,
    Capabilities,
    DeviceView,
    GetRegistryStats,
    RegistryStats,
)
from sdv_events.servers import NatsServer, PostgresServer
from sdv_events.service import Ping, ServiceHealth

console = Console(width=None if sys.stdout.isatty() else 110)
FLEET_TOKEN = "bench-fleet-token-" + uuid.uuid4().hex
CAPS = Capabilities(hardware_type="linux-generic", arch="x86_64", runtimes=["native"],
                    python_version="3.11", agent_version="bench", memory_mb=4096, storage_mb=32768)


@dataclass(frozen=True)
class Sizes:
    devices: int  # admitted with the fleet token, then heartbeating
    operator_devices: int  # admitted the operator's way: announce → accept → announce
    concurrency: int  # requests in flight
    heartbeat_s: float  # how long every device heartbeats (as fast as the bus takes it)
    raw_requests: int  # raw request/reply baseline


QUICK = Sizes(devices=10_000, operator_devices=300, concurrency=64, heartbeat_s=10.0, raw_requests=10_000)
FULL = Sizes(devices=10_000, operator_devices=2_000, concurrency=64, heartbeat_s=30.0, raw_requests=30_000)

# Raw baselines run as child processes too, so each side has a process of its own.
ECHO = textwrap.dedent("""
    import asyncio, sys, nats
    async def main():
        nc = await nats.connect(sys.argv[1], user_credentials=sys.argv[2])
        async def echo(msg): await msg.respond(msg.data)
        await nc.subscribe("bench.echo", cb=echo)
        await nc.flush(); print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await nc.close()
    asyncio.run(main())
""")
COUNTER = textwrap.dedent("""
    import asyncio, sys, nats
    async def main():
        nc = await nats.connect(sys.argv[1], user_credentials=sys.argv[2])
        count = 0
        def on_msg(msg):
            nonlocal count; count += 1
        async def cb(msg): on_msg(msg)
        await nc.subscribe("bench.hb.*", cb=cb, pending_msgs_limit=10_000_000,
                           pending_bytes_limit=1 << 30)
        await nc.flush(); print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line: break
            print(count, flush=True)
        await nc.close()
    asyncio.run(main())
""")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


async def gather_limited(n: int, limit: int, work: Callable[[int], Awaitable[None]]) -> None:
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await work(i)

    await asyncio.gather(*(worker() for _ in range(limit)))


@dataclass(frozen=True)
class Device:
    device_id: str
    keypair: nkeys.KeyPair
    token: str | None


async def announce(nc: NatsClient, device: Device) -> AnnounceReply:
    """The agent's exchange: ask for a nonce, sign the announce with the device's key, send it
    (two requests; the reply comes sealed to the device's key)."""
    return await signed_announce(nc, device.keypair, device.device_id, CAPS, token=device.token,
                                 timeout=30)


def devices(prefix: str, n: int, token: str | None) -> list[Device]:
    return [Device(f"{prefix}-{i:05d}", new_keypair(Role.USER), token) for i in range(n)]


def bodies(prefix: str, n: int, token: str | None) -> list[Announce]:
    return [Announce(device_id=f"{prefix}-{i:05d}", public_key=public_key(new_keypair(Role.USER)),
                     capabilities=CAPS, token=token) for i in range(n)]


@dataclass
class Ctx:
    url: str
    creds_file: str
    enrol: NatsClient
    ops: NatsClient
    registry_pid: int
    sizes: Sizes

    async def stats(self) -> RegistryStats:
        return await CommandClient(self.ops, timeout=30).call("registry", "stats", GetRegistryStats(),
                                                              RegistryStats)


def child(script: str, ctx: Ctx) -> subprocess.Popen[str]:
    """A raw-baseline process; returns once it printed `ready`."""
    process = subprocess.Popen([sys.executable, "-c", script, ctx.url, ctx.creds_file],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.readline()
    return process


def start_registry(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    profile = ["-m", "cProfile", "-o", env["BENCH_PROFILE"]] if env.get("BENCH_PROFILE") else []
    with log.open("wb") as err:
        return subprocess.Popen([sys.executable, *profile, "-m", "sdv_registry"], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)


async def raw_request_reply(ctx: Ctx) -> float:
    echo = await asyncio.to_thread(child, ECHO, ctx)
    assert echo.stdin is not None
    payload = encode(bodies("raw", 1, None)[0])
    start = time.perf_counter()
    await gather_limited(ctx.sizes.raw_requests, ctx.sizes.concurrency,
                         lambda _: ctx.ops.request("bench.echo", payload, timeout=30))
    rate = ctx.sizes.raw_requests / (time.perf_counter() - start)
    echo.stdin.close()
    echo.wait(10)
    return rate


async def fleet_admissions(ctx: Ctx) -> tuple[float, float]:
    todo = devices("dev", ctx.sizes.devices, FLEET_TOKEN)
    admitted = 0

    async def one(i: int) -> None:
        nonlocal admitted
        reply = await announce(ctx.enrol, todo[i])
        admitted += reply.status == "accepted" and reply.credentials is not None

    cpu0, start = cpu_seconds(ctx.registry_pid), time.perf_counter()
    await gather_limited(len(todo), ctx.sizes.concurrency, one)
    elapsed = time.perf_counter() - start
    assert admitted == len(todo), f"only {admitted} of {len(todo)} admitted"
    return len(todo) / elapsed, 100 * (cpu_seconds(ctx.registry_pid) - cpu0) / elapsed


async def operator_admissions(ctx: Ctx) -> float:
    todo = devices("op", ctx.sizes.operator_devices, None)
    client = CommandClient(ctx.ops, actor="bench", timeout=30)

    async def one(i: int) -> None:
        device = todo[i]
        assert (await announce(ctx.enrol, device)).status == "pending"
        await client.call("registry", "accept", AcceptDevice(device.device_id), DeviceView)
        assert (await announce(ctx.enrol, device)).credentials is not None

    start = time.perf_counter()
    await gather_limited(len(todo), ctx.sizes.concurrency, one)
    return len(todo) / (time.perf_counter() - start)


async def blast(nc: NatsClient, subjects: list[str], seconds: float) -> int:
    """Publish round-robin over `subjects` as fast as the connection takes it."""
    sent, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for subject in subjects[:1000] if sent == 0 else subjects:
            nc.publish  # noqa: B018 - keeps the attribute lookup out of the timing difference
            await nc.publish(subject, b"")
            sent += 1
            if sent % 2000 == 0:
                await nc.flush()
                if time.perf_counter() >= deadline:
                    break
    await nc.flush()
    return sent


async def settle(read: Callable[[], Awaitable[int]], start: float, quiet_s: float = 0.5) -> tuple[int, float]:
    """Wait until a counter stops moving; return it and the time it last moved (from start)."""
    last, moved_at = await read(), time.perf_counter()
    while time.perf_counter() - moved_at < quiet_s:
        await asyncio.sleep(0.1)
        now = await read()
        if now != last:
            last, moved_at = now, time.perf_counter()
    return last, moved_at - start


async def raw_heartbeats(ctx: Ctx, pub: NatsClient) -> tuple[float, int]:
    counter = await asyncio.to_thread(child, COUNTER, ctx)
    assert counter.stdin is not None

    async def read() -> int:
        counter.stdin.write("\n")  # type: ignore[union-attr]
        counter.stdin.flush()  # type: ignore[union-attr]
        return int(await asyncio.to_thread(counter.stdout.readline))  # type: ignore[union-attr]

    subjects = [f"bench.hb.dev-{i:05d}" for i in range(ctx.sizes.devices)]
    start = time.perf_counter()
    sent = await blast(pub, subjects, ctx.sizes.heartbeat_s)
    received, elapsed = await settle(read, start)
    counter.stdin.close()
    counter.wait(10)
    return received / elapsed, sent - received


async def registry_heartbeats(ctx: Ctx, pub: NatsClient) -> tuple[float, int, float, int]:
    subjects = [f"sdv.hb.dev-{i:05d}" for i in range(ctx.sizes.devices)]
    base = await ctx.stats()

    async def read() -> int:
        return (await ctx.stats()).heartbeats - base.heartbeats

    cpu0, start = cpu_seconds(ctx.registry_pid), time.perf_counter()
    sent = await blast(pub, subjects, ctx.sizes.heartbeat_s)
    handled, elapsed = await settle(read, start)
    cpu = 100 * (cpu_seconds(ctx.registry_pid) - cpu0) / (time.perf_counter() - start)
    stats = await ctx.stats()
    return handled / elapsed, sent - handled, cpu, stats.presence_transitions - base.presence_transitions


async def wait_ready(ops: NatsClient, process: subprocess.Popen[bytes]) -> None:
    client = CommandClient(ops, timeout=1)
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"registry exited with {process.returncode}")
        with contextlib.suppress(Exception):
            await client.call("registry", "ping", Ping(), ServiceHealth)
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("registry did not answer ping")


async def run(sizes: Sizes) -> dict[str, float | int]:
    phases: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="sdv-bench-registry-"))
    trust = Trust.generate()
    trust_file = trust.authority().save(work / "registry-trust.json")  # what `sdv up` gives it
    creds_file = work / "service.creds"
    creds_file.write_text(trust.service_creds("bench"))
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    pg = None if os.environ.get("SDV_DATABASE_URL") else PostgresServer().start()
    database_url = os.environ.get("SDV_DATABASE_URL") or pg.url  # type: ignore[union-attr]
    server = NatsServer(config_text=render_server_config(trust)).start()
    env = dict(os.environ, SDV_NATS_URL=server.url, SDV_DATABASE_URL=database_url,
               SDV_NATS_CREDS=str(creds_file), SDV_TRUST_FILE=str(trust_file),
               SDV_REGISTRY_SCHEMA=schema, SDV_FLEET_TOKEN=FLEET_TOKEN, SDV_LOG_LEVEL="WARNING",
               SDV_REGISTRY_HEARTBEAT_SILENCE_S="120",
               # The bench measures admission throughput, not the announce flood limits.
               SDV_REGISTRY_ANNOUNCE_RATE="1000000", SDV_REGISTRY_ANNOUNCE_BURST="1000000")
    registry = start_registry(env, work / "registry.log")
    ops = await nats.connect(server.url, user_credentials=str(creds_file))
    pub = await nats.connect(server.url, user_credentials=str(creds_file), flush_timeout=30,
                             pending_size=64 * 1024 * 1024)
    enrol = await nats.connect(server.url, user_credentials=raw_creds(trust.enrol_creds()),
                               inbox_prefix=ENROL_INBOX_PREFIX)
    try:
        await wait_ready(ops, registry)
        ctx = Ctx(server.url, str(creds_file), enrol, ops, registry.pid, sizes)

        async def phase(name: str, coro: Awaitable[object]) -> object:
            start = time.perf_counter()
            result = await coro
            phases.append(f"{name}: {time.perf_counter() - start:.1f} s, {load()}")
            return result

        raw_rr = await phase("raw request/reply", raw_request_reply(ctx))
        admissions, admit_cpu = await phase("fleet-token admissions", fleet_admissions(ctx))  # type: ignore[misc]
        operator = await phase("operator admissions", operator_admissions(ctx))
        raw_hb, raw_lost = await phase("raw heartbeats", raw_heartbeats(ctx, pub))  # type: ignore[misc]
        hb, hb_lost, hb_cpu, transitions = await phase("registry heartbeats", registry_heartbeats(ctx, pub))  # type: ignore[misc]
    finally:
        for nc in (ops, pub, enrol):
            with contextlib.suppress(Exception):
                await nc.close()
        registry.terminate()
        registry.wait(20)
        server.stop()
        if pg is not None:
            pg.stop()
        else:
            conn = await asyncpg.connect(database_url)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()
    for line in phases:
        console.print(line)
    return {
        "devices": sizes.devices,
        "admissions_per_s": round(admissions, 1),  # type: ignore[arg-type]
        "raw_request_reply_per_s": round(raw_rr, 1),  # type: ignore[arg-type]
        "admission_ratio": round(admissions / raw_rr, 4),  # type: ignore[operator]
        "admission_cpu_pct": round(admit_cpu, 1),
        "operator_admissions_per_s": round(operator, 1),  # type: ignore[arg-type]
        "heartbeats_per_s": round(hb, 1),
        "raw_heartbeats_per_s": round(raw_hb, 1),
        "heartbeat_ratio": round(hb / raw_hb, 4),
        "heartbeats_lost": hb_lost,
        "raw_heartbeats_lost": raw_lost,
        "heartbeat_cpu_pct": round(hb_cpu, 1),
        "online_transitions": transitions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under a minute")
    args = parser.parse_args()
    result = asyncio.run(run(QUICK if args.quick else FULL))
    table = Table("figure", "registry", "raw baseline", "ratio")
    table.add_row("admissions/s (fleet token, 1 request)", f"{result['admissions_per_s']:,}",
                  f"{result['raw_request_reply_per_s']:,} req/s", f"{result['admission_ratio']:.3f}")
    table.add_row("operator admissions/s (3 requests)", f"{result['operator_admissions_per_s']:,}", "", "")
    table.add_row("heartbeats handled/s", f"{result['heartbeats_per_s']:,}",
                  f"{result['raw_heartbeats_per_s']:,} msg/s", f"{result['heartbeat_ratio']:.3f}")
    table.add_row("registry CPU % (admissions / heartbeats)",
                  f"{result['admission_cpu_pct']} / {result['heartbeat_cpu_pct']}", "", "")
    console.print(table)
    print(json.dumps({"bench": "registry", "mode": "quick" if args.quick else "full", **result}))


if __name__ == "__main__":
    main()
