"""Edge agent benchmark: deploy time, console latency, idle CPU and the cost of metrics.

    .venv/bin/python bench/edge_agent.py [--quick]

Starts its own NATS and real agent processes running real (tiny, dependency-free) apps built into
signed packages. Measures:
- deploy: desired-state write → the agent's AppStarted fact received (download, verify, venv,
  spawn), over a few versions;
- console: print time inside the app → line received from `sdv.logs.…` (p50/p99), against the raw
  baseline of a nats-py JetStream publish → receive on the same server;
- idle CPU of the agent process with 3 apps running, with metrics as configured by default
  (heartbeat 5 s, usage sampling 1 s) and with both turned (almost) off: the difference is what
  metrics cost;
- download: a 24 MB artifact through the agent's resumable downloader (every chunk appended to
  the partial file and its sequence recorded) against the raw floor (an ordered consumer reading the same
  chunks into memory) and nats-py's own object-store `get`, on the same server; and the time to
  finish after an attempt was cut off halfway;
- activation gates: a version staged behind the gate `Vehicle.Speed == 0` (downloaded, verified,
  installed; the old one running) — time from the stand-in KUKSA databroker's speed becoming 0
  (tests/integration/vehicle_support.py `PushingDatabroker`; the real one cannot run here) to the
  agent's AppStarted of the new version (`activate_after_gate_ms`, median); beside it, in the same
  run, the same switch without a gate (a held version released by a desired-state write →
  AppStarted, `activate_switch_baseline_ms`) and the stand-in's raw notification latency (set →
  a kuksa-client subscriber in this process, `raw_signal_notify_ms`).
Last line: one JSON object (see bench/README.md). Goals: deploy < 2 s, log p99 < 50 ms, idle CPU < 1 %,
activate after the gate < 1,000 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
import psutil

from sdv_events.logs import configure_logging
from sdv_events.servers import NatsServer

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location(
    "sdv_agent_test_harness", HERE.parent / "tests" / "integration" / "edge_agent" / "agent_harness.py")
assert spec is not None
assert spec.loader is not None
harness = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = harness
spec.loader.exec_module(harness)
spec = importlib.util.spec_from_file_location(
    "sdv_vehicle_test_support", HERE.parent / "tests" / "integration" / "vehicle_support.py")
assert spec is not None
assert spec.loader is not None
vehicle = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = vehicle
spec.loader.exec_module(vehicle)
SPEED = "Vehicle.Speed"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def deploy_times(fleet, root: Path, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for i in range(runs):
        pkg = await fleet.publish(harness.make_app(root, "deploy", f"1.0.{i}", harness.ticker_source("d")))
        started = time.monotonic()
        await fleet.desire("bench-car", 1 + i, {"deploy": pkg})
        await fleet.fact("bench-car", "AppStarted", version=f"1.0.{i}", timeout=30)
        times.append(time.monotonic() - started)
    await fleet.desire("bench-car", 100, {})
    await fleet.fact("bench-car", "AppUninstalled", timeout=30)
    return times


async def console_latency(fleet, root: Path, seconds: float) -> list[float]:  # type: ignore[no-untyped-def]
    pkg = await fleet.publish(harness.make_app(root, "talker", "1.0.0", harness.ticker_source("t")))
    from sdv_events.schemas.deployment import DesiredApp

    await fleet.desire("bench-car", 200, {"talker": DesiredApp(package=pkg, config={"TICK_S": "0.01"})})
    await fleet.fact("bench-car", "AppStarted", app="talker", timeout=30)
    await asyncio.sleep(seconds)
    subject = "sdv.logs.bench-car.talker.stdout"
    delays = [m.received - float(m.line.split()[2]) for m in fleet.logs
              if m.subject == subject and m.line.startswith("tick ")]
    await fleet.desire("bench-car", 201, {})
    await fleet.fact("bench-car", "AppUninstalled", app="talker", timeout=30)
    return delays


async def raw_publish_latency(url: str, n: int) -> list[float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    got: list[float] = []
    done = asyncio.Event()

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        got.append(time.time() - float(msg.data))
        if len(got) >= n:
            done.set()

    await nc.subscribe("sdv.logs.raw.baseline.stdout", cb=on_msg)
    for _ in range(n):
        await js.publish("sdv.logs.raw.baseline.stdout", f"{time.time():.6f}".encode())
        await asyncio.sleep(0.01)
    await asyncio.wait_for(done.wait(), 10)
    await nc.close()
    return got


def agent_cpu_pct(pid: int, seconds: float) -> float:
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / seconds


async def idle_cpu(fleet, root: Path, seconds: float, *, metrics: bool) -> float:  # type: ignore[no-untyped-def]
    env = {} if metrics else {"SDV_AGENT_HEARTBEAT_S": "3600", "SDV_AGENT_MONITOR_S": "3600"}
    env |= {"SDV_LOG_LEVEL": "WARNING"}
    device = f"idle-{'m' if metrics else 'n'}"
    agent = fleet.agent(device, **env)
    if metrics:  # the default heartbeat, not the tests' 1 s one
        agent.stop()
        agent.env["SDV_AGENT_HEARTBEAT_S"] = "5"
        agent.start()
    from sdv_events.schemas.deployment import DesiredApp

    apps = {}
    for i in range(3):
        pkg = await fleet.publish(harness.make_app(root, f"idle{i}", "1.0.0", harness.ticker_source(f"i{i}")))
        apps[f"idle{i}"] = DesiredApp(package=pkg, config={"TICK_S": "1"})
    await fleet.desire(device, 1, apps)
    for name in apps:
        await fleet.until_state(device, name, "RUNNING", healthy=True, timeout=30)
    await asyncio.sleep(1.0)
    assert agent.process is not None
    cpu = await asyncio.to_thread(agent_cpu_pct, agent.process.pid, seconds)
    await fleet.desire(device, 2, {})
    agent.stop()
    harness.kill_processes_under(agent.data_dir)
    return cpu


async def download_rates(url: str, root: Path, runs: int) -> dict[str, float]:
    """MB/s of the agent's Downloader vs a raw object-store get, best of `runs` each."""
    import hashlib
    import os

    from sdv_edge_agent.adapters.downloads import Downloader
    from sdv_edge_agent.adapters.link import NatsLink
    from sdv_events.provisioning import PACKAGES_BUCKET
    from sdv_events.schemas.packages import PackageInfo

    data = os.urandom(24 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    package = PackageInfo(name="blob", version="1", digest=digest, size=len(data), object_name=f"blob/{digest}",
                          manifest_digest="", signature="", key_id="", channel="dev", runtime="native",
                          entry_point="main.py", python_version="3.11")
    nc = await nats.connect(url)
    store = await nc.jetstream().object_store(PACKAGES_BUCKET)
    await store.put(package.object_name, data)
    link = NatsLink(url, "bench-dl")
    link_task = asyncio.create_task(link.run())
    await link.connected.wait()
    raw, ours, store_get = [], [], []
    js = nc.jetstream()
    try:
        for _ in range(runs):
            started = time.perf_counter()
            got = await store.get(package.object_name)  # nats-py's own: concatenates bytes per chunk
            store_get.append(time.perf_counter() - started)
            assert got.data == data
            started = time.perf_counter()  # the floor: an ordered consumer over the chunks, in memory
            info = await store.get_info(package.object_name)
            sub = await js.subscribe(f"$O.{PACKAGES_BUCKET}.C.{info.nuid}", ordered_consumer=True)
            chunks, size = [], 0
            while size < len(data):
                msg = await sub.next_msg(timeout=10)
                chunks.append(msg.data)
                size += len(msg.data)
            await sub.unsubscribe()
            raw.append(time.perf_counter() - started)
            assert b"".join(chunks) == data
            started = time.perf_counter()
            assert await Downloader(link, root / "dl").fetch(package) == data
            ours.append(time.perf_counter() - started)
        # Resume: half the chunks on disk (an interrupted attempt), then the rest.
        half = asyncio.current_task()
        progress_task: asyncio.Task[bytes] | None = None

        def stop_halfway(have: int, total: int) -> None:
            if have >= total // 2 and progress_task is not None:
                progress_task.cancel()

        progress_task = asyncio.create_task(Downloader(link, root / "dl", progress=stop_halfway).fetch(package))
        try:
            await progress_task
        except asyncio.CancelledError:
            if half is not None and half.cancelling():
                raise
        started = time.perf_counter()
        assert await Downloader(link, root / "dl").fetch(package) == data
        resume_s = time.perf_counter() - started
    finally:
        link_task.cancel()
        await link.close()
        await nc.close()
    mb = len(data) / 1e6
    return {"download_mb_s": round(mb / min(ours), 1), "raw_chunks_mb_s": round(mb / min(raw), 1),
            "nats_py_object_get_mb_s": round(mb / min(store_get), 1),
            "download_ratio": round(min(raw) / min(ours), 2), "resume_half_s": round(resume_s, 3),
            "download_s": round(min(ours), 3)}


async def activation_times(fleet, root: Path, runs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Gated switches (speed 50 → 0) and, alternating with them, held switches released by a new
    desired document: both to versions already staged, on the same agent."""
    from sdv_events.schemas.deployment import Activation, DesiredApp

    databroker = await vehicle.PushingDatabroker({SPEED: 50.0}).serve()
    device = "bench-gate"
    try:
        fleet.agent(device, SDV_LOG_LEVEL="WARNING", SDV_AGENT_DATABROKER=databroker.address)
        versions = [await fleet.publish(harness.make_app(root, "gated", f"1.0.{i}", harness.ticker_source("g")))
                    for i in range(2 * runs + 1)]
        revision = 1
        await fleet.desire(device, revision, {"gated": versions[0]})
        await fleet.until_state(device, "gated", "RUNNING", healthy=True, timeout=30)
        gate_ms, switch_ms = [], []
        for i in range(runs):
            gated, held = versions[2 * i + 1], versions[2 * i + 2]
            await databroker.set(SPEED, 50.0)
            revision += 1
            await fleet.desire(device, revision, {"gated": DesiredApp(
                package=gated, rollout_id=f"g{i}", activation=Activation(gates=[f"{SPEED} == 0"]))})
            await fleet.fact(device, "ActivationDeferred", version=gated.version, value=50.0, timeout=30)
            stopped = time.time()
            await databroker.set(SPEED, 0.0)
            fact = await fleet.fact(device, "AppStarted", version=gated.version, timeout=30)
            gate_ms.append((fact.occurred_at.timestamp() - stopped) * 1000)
            await fleet.until_state(device, "gated", "RUNNING", healthy=True, version=gated.version, timeout=30)

            revision += 1
            await fleet.desire(device, revision, {"gated": DesiredApp(
                package=held, rollout_id=f"h{i}", activation=Activation(hold=True))})
            await fleet.fact(device, "ActivationDeferred", version=held.version, held=True, timeout=30)
            revision += 1
            released = time.time()
            await fleet.desire(device, revision, {"gated": DesiredApp(package=held, rollout_id=f"h{i}")})
            fact = await fleet.fact(device, "AppStarted", version=held.version, timeout=30)
            switch_ms.append((fact.occurred_at.timestamp() - released) * 1000)
            await fleet.until_state(device, "gated", "RUNNING", healthy=True, version=held.version, timeout=30)
        downloads = len(fleet.find_facts(device, "AppDownloadStarted"))
        assert downloads == len(versions), f"{downloads} downloads for {len(versions)} versions"
        notify_ms = await raw_signal_notify(databroker, 50 if runs < 5 else 200)
        await fleet.desire(device, revision + 1, {})
        await fleet.fact(device, "AppUninstalled", app="gated", timeout=30)
    finally:
        await databroker.stop()
    gate, switch, notify = statistics.median(gate_ms), statistics.median(switch_ms), statistics.median(notify_ms)
    return {"activate_after_gate_ms": round(gate, 1), "activate_after_gate_max_ms": round(max(gate_ms), 1),
            "activate_switch_baseline_ms": round(switch, 1), "raw_signal_notify_ms": round(notify, 2),
            "activate_ratio": round(gate / switch, 2), "activations": len(gate_ms)}


async def raw_signal_notify(databroker, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    """set → a kuksa-client subscriber (in this process) sees the value, `n` times."""
    from kuksa_client.grpc.aio import VSSClient

    delays: list[float] = []
    async with VSSClient("127.0.0.1", databroker.port, ensure_startup_connection=False) as client:
        updates = client.subscribe_current_values([SPEED])
        await anext(updates)  # the current value
        for i in range(n):
            started = time.perf_counter()
            await databroker.set(SPEED, float(100 + i))
            batch = await anext(updates)
            assert batch[SPEED].value == float(100 + i)
            delays.append((time.perf_counter() - started) * 1000)
        await updates.aclose()
    return delays


async def bench(quick: bool) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="sdv-bench-agent-"))
    with NatsServer() as server:
        fleet = await harness.Fleet(server.url, root).open()
        try:
            fleet.agent("bench-car", SDV_LOG_LEVEL="WARNING")
            deploys = await deploy_times(fleet, root, 3 if quick else 6)
            delays = await console_latency(fleet, root, 3.0 if quick else 10.0)
            raw = await raw_publish_latency(server.url, 200 if quick else 1000)
            window = 10.0 if quick else 30.0
            cpu_metrics = await idle_cpu(fleet, root, window, metrics=True)
            cpu_bare = await idle_cpu(fleet, root, window, metrics=False)
            downloads = await download_rates(server.url, root, 2 if quick else 5)
            activation = await activation_times(fleet, root, 3 if quick else 8)
        finally:
            await fleet.close()
    figures = {
        "deploy_s": round(statistics.median(deploys), 3),
        "deploy_max_s": round(max(deploys), 3),
        "log_p50_ms": round(pct(delays, 0.5) * 1000, 1),
        "log_p99_ms": round(pct(delays, 0.99) * 1000, 1),
        "log_lines": len(delays),
        "raw_js_p50_ms": round(pct(raw, 0.5) * 1000, 2),
        "raw_js_p99_ms": round(pct(raw, 0.99) * 1000, 2),
        "idle_cpu_pct": round(cpu_metrics, 2),
        "idle_cpu_no_metrics_pct": round(cpu_bare, 2),
        "metrics_cpu_pct": round(cpu_metrics - cpu_bare, 2),
        "idle_window_s": window,
        **downloads,
        **activation,
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows, about a minute")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING")
    started = time.perf_counter()
    figures = asyncio.run(bench(args.quick))
    print(f"deploy (desired → AppStarted)   median {figures['deploy_s']:.3f} s   max {figures['deploy_max_s']:.3f} s   goal < 2 s")
    print(f"console line latency           p50 {figures['log_p50_ms']} ms   p99 {figures['log_p99_ms']} ms   goal p99 < 50 ms"
          f"   (raw JetStream publish→receive p50 {figures['raw_js_p50_ms']} ms, p99 {figures['raw_js_p99_ms']} ms;"
          f" {figures['log_lines']} lines)")
    print(f"idle agent CPU, 3 apps         {figures['idle_cpu_pct']} %   goal < 1 %   (metrics off: "
          f"{figures['idle_cpu_no_metrics_pct']} %, so metrics cost {figures['metrics_cpu_pct']} %)")
    print(f"download 24 MB                  {figures['download_mb_s']} MB/s ({figures['download_s']} s)   raw "
          f"chunks into memory {figures['raw_chunks_mb_s']} MB/s   ratio {figures['download_ratio']}   "
          f"(nats-py object get {figures['nats_py_object_get_mb_s']} MB/s)   resume from half: "
          f"{figures['resume_half_s']} s")
    print(f"activate after the gate         median {figures['activate_after_gate_ms']} ms   max "
          f"{figures['activate_after_gate_max_ms']} ms   goal < 1000 ms   (the same switch released by a desired "
          f"write: {figures['activate_switch_baseline_ms']} ms, ratio {figures['activate_ratio']}; raw stand-in "
          f"notification {figures['raw_signal_notify_ms']} ms; {figures['activations']} switches each)")
    print(f"total {time.perf_counter() - started:.1f}s")
    sys.stdout.flush()
    print(json.dumps({"bench": "edge_agent", **figures}))


if __name__ == "__main__":
    main()
