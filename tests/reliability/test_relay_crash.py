"""A relay process killed with SIGKILL while it publishes, restarted, killed again …: JetStream
ends up with every event exactly once and in per-stream order.

The relay runs as a real process (`python -m sdv_events.relay_main`), writers append in this
process all along, and the kills land while the relay has a backlog to publish.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from sdv_events.codec import WireEnvelope
from sdv_events.provisioning import EVENTS_STREAM
from sdv_events.registry import event
from sdv_events.store import ANY, EventStore

pytestmark = pytest.mark.slow

STREAMS = [f"crash-{i}" for i in range(12)]
WRITERS = 8
WRITER_CAP_S = 90.0  # writers append (1-4 events at a time) until the kills are over, at most this long
KILLS = 3


@event("crashtest.Appended")
class Appended(msgspec.Struct, frozen=True):
    writer: int
    n: int


async def stream_count(js: JetStreamContext) -> int:
    return int((await js.stream_info(EVENTS_STREAM)).state.messages)


async def store_count(store: EventStore) -> int:
    return int(await store.pool.fetchval(f"SELECT count(*) FROM {store.schema}.events"))


async def read_events(js: JetStreamContext, *, timeout: float = 20.0) -> list[Msg]:
    total = await stream_count(js)
    sub = await js.subscribe(
        "sdv.evt.>", stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    msgs: list[Msg] = []
    deadline = time.monotonic() + timeout
    try:
        while len(msgs) < total:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"read {len(msgs)} of {total} messages before the deadline"
            msgs.append(await sub.next_msg(timeout=remaining))
    finally:
        await sub.unsubscribe()
    return msgs


class RelayProcess:
    def __init__(self, database_url: str, schema: str, nats_url: str, log_dir: Path) -> None:
        self.args = [
            sys.executable, "-m", "sdv_events.relay_main", "--database-url", database_url,
            "--schema", schema, "--nats-url", nats_url, "--batch-size", "25",
        ]
        self.log_dir = log_dir
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"relay-{self.starts}.log", "wb")  # noqa: SIM115 - child owns it
        env = {**os.environ, "SDV_LOG_LEVEL": "INFO"}
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"relay died on its own:\n{self.logs()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        assert self.proc.returncode == -signal.SIGKILL

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"relay ignored SIGTERM for {timeout}s:\n{self.logs()}") from None

    def logs(self) -> str:
        return (self.log_dir / f"relay-{self.starts}.log").read_text(errors="replace")[-4000:]

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def test_relay_process_killed_mid_publish_loses_and_duplicates_nothing(
    store: EventStore, nc: NatsClient, database_url: str, fresh_nats_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    js = nc.jetstream()
    relay = RelayProcess(database_url, store.schema, fresh_nats_url, tmp_path)
    rng = random.Random(11)
    stop_writers = asyncio.Event()

    async def writer(w: int) -> int:
        """Appends until the kills are over (at most WRITER_CAP_S), paced to span them."""
        written = 0
        n = 0
        while not stop_writers.is_set() and time.monotonic() - started < WRITER_CAP_S:
            n += 1
            bodies = [Appended(w, n * 10 + k) for k in range(rng.randint(1, 4))]
            await store.append(rng.choice(STREAMS), ANY, bodies)
            written += len(bodies)
            await asyncio.sleep(0.003)
        return written

    kills: list[tuple[int, int, int]] = []  # (on JetStream at restart, at the kill, in the store)
    writers = asyncio.gather(*(writer(w) for w in range(WRITERS)))
    try:
        # Build a backlog first so the first relay starts with plenty to publish.
        while await store_count(store) < 600:
            await asyncio.sleep(0.02)
            assert time.monotonic() - started < 15, "writers too slow"
        for _ in range(KILLS):
            relay.start()
            at_start = await stream_count(js)
            # Kill once this relay has published a few batches and still has work to do.
            target = at_start + rng.randint(100, 400)
            deadline = time.monotonic() + 15
            while await stream_count(js) < target:
                assert time.monotonic() < deadline, f"relay made no progress:\n{relay.logs()}"
                assert relay.running(), relay.logs()
                await asyncio.sleep(0.005)
            relay.kill()
            kills.append((at_start, await stream_count(js), await store_count(store)))

        writing_at_last_kill = not writers.done()
        stop_writers.set()
        written = sum(await asyncio.wait_for(writers, 30))
        relay.start()
        total = await store_count(store)
        assert total == written
        deadline = time.monotonic() + 20
        while (published := await stream_count(js)) < total:
            assert time.monotonic() < deadline, f"{published}/{total} published:\n{relay.logs()}"
            assert relay.running(), relay.logs()
            await asyncio.sleep(0.05)
        # Give a misbehaving relay a moment to publish anything twice, then stop it cleanly.
        await asyncio.sleep(0.3)
        assert relay.terminate() == 0, relay.logs()
    finally:
        stop_writers.set()
        if not writers.done():
            await asyncio.wait_for(asyncio.gather(writers, return_exceptions=True), 30)
        relay.cleanup()

    # The kills happened mid-stream: each relay had published, and events were still waiting.
    assert len(kills) == KILLS
    assert writing_at_last_kill, "the writers were done before the last kill"
    assert total >= 2000
    for at_start, at_kill, in_store in kills:
        assert at_kill > at_start
        assert at_kill < in_store, f"killed after catching up ({at_kill}/{in_store}): not mid-stream"

    rows = await store.pool.fetch(f"SELECT event_id, stream_id, version FROM {store.schema}.events")
    expected = {r["event_id"]: (r["stream_id"], r["version"]) for r in rows}
    msgs = await read_events(js)
    assert len(msgs) == len(expected) == total
    ids = [uuid.UUID(m.headers["Nats-Msg-Id"]) for m in msgs if m.headers]
    assert len(ids) == len(set(ids)) == len(msgs), "duplicate events on SDV_EVENTS"
    assert set(ids) == set(expected), "events missing from SDV_EVENTS"
    versions: dict[str, list[int]] = defaultdict(list)
    for msg in msgs:
        wire = msgspec.json.decode(msg.data, type=WireEnvelope)
        assert expected[wire.event_id] == (wire.stream_id, wire.version)
        versions[wire.stream_id].append(wire.version)
    assert set(versions) == set(STREAMS)
    for stream_id, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), f"{stream_id} out of order"
    assert time.monotonic() - started < 40
