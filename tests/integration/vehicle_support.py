"""What a vehicle runs beside the agent, for tests (loaded by tests/conftest.py by path as
`sdv_vehicle_test_support`):

- `StandInDatabroker`: a STAND-IN for the KUKSA databroker, which cannot run here (a Rust
  program whose crates and releases are out of reach, FACTS.md). One `grpc.aio` server serves
  the three protocols a vehicle app may speak, built from the clients' own generated code:
  kuksa.val.v1 and kuksa.val.v2 from kuksa-client's shipped servicers (server info, values and
  metadata, subscriptions), and sdv.databroker.v1 — all that velocitas-sdk 0.15 speaks — from
  velocitas-sdk's own generated servicer, taken out of its wheel (its pins cannot share a venv
  with kuksa-client's). It serves a catalogue of signals (path → entry type, datatype) and
  cycles Vehicle.Speed through a list of values.
- `PushingDatabroker`: a STAND-IN too (kuksa.val.v1 only), holding signal values a test sets;
  each change is pushed to every subscriber of that signal, as the databroker does. It can be
  stopped and served again on the same port (a databroker that goes away and comes back).
- `Mosquitto`: Debian's real MQTT broker, on a free port of its own (deploy/mqtt-setup.sh).
- `velocitas_wheelhouse`: the Velocitas example's pinned requirements as wheels for x86_64 and
  aarch64, downloaded once per machine (keyed by the requirements) so the packager can build
  the example offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

REPO = Path(__file__).parents[2]
VELOCITAS_APP = REPO / "examples" / "apps" / "velocitas-speed"
SPEED = "Vehicle.Speed"
# A few VSS 5.0 signals: a sensor, actuators (one a Velocitas app could set), an attribute.
DEFAULT_CATALOG: dict[str, tuple[str, str]] = {
    SPEED: ("sensor", "float"),
    "Vehicle.Body.Horn.IsActive": ("actuator", "boolean"),
    "Vehicle.Cabin.Seat.Row1.DriverSide.Position": ("actuator", "uint16"),
    "Vehicle.VehicleIdentification.VIN": ("attribute", "string"),
}
PLATFORMS = ("manylinux2014_x86_64", "manylinux2014_aarch64")


@dataclass
class VehicleSignals:
    catalog: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_CATALOG))
    speeds: list[float] = field(default_factory=lambda: [100.0, 150.0, 90.0])
    interval_s: float = 0.3
    subscribers: Counter[str] = field(default_factory=Counter)  # protocol → subscriptions

    def under(self, root: str) -> list[str]:
        return sorted(p for p in self.catalog if p == root or p.startswith(root + "."))


def _kuksa_servicers(signals: VehicleSignals) -> tuple[Any, Any]:
    from kuksa.val.v1 import types_pb2 as t1
    from kuksa.val.v1 import val_pb2 as v1
    from kuksa.val.v1 import val_pb2_grpc as g1
    from kuksa.val.v2 import types_pb2 as t2
    from kuksa.val.v2 import val_pb2 as v2
    from kuksa.val.v2 import val_pb2_grpc as g2

    def enum(kind: str, datatype: str, prefix: bool) -> tuple[str, str]:
        dt = datatype.upper().replace("[]", "_ARRAY")
        return (f"ENTRY_TYPE_{kind.upper()}", f"DATA_TYPE_{dt}") if prefix else (kind, dt)

    class ValV1(g1.VALServicer):  # type: ignore[misc]
        async def GetServerInfo(self, request: Any, context: Any) -> Any:
            return v1.GetServerInfoResponse(name="stand-in databroker (kuksa-client protos)", version="test")

        async def Get(self, request: Any, context: Any) -> Any:
            entries = []
            for e in request.entries:
                if e.view == t1.VIEW_METADATA or t1.FIELD_METADATA in e.fields:
                    for path in signals.under(e.path):
                        kind, datatype = enum(*signals.catalog[path], prefix=True)
                        entries.append(t1.DataEntry(path=path, metadata=t1.Metadata(
                            entry_type=t1.EntryType.Value(kind), data_type=t1.DataType.Value(datatype))))
                else:
                    entries.append(t1.DataEntry(path=e.path, value=t1.Datapoint(float=signals.speeds[0])))
            return v1.GetResponse(entries=entries)

        async def Subscribe(self, request: Any, context: Any) -> Any:
            signals.subscribers["kuksa.val.v1"] += 1
            i = 0
            while True:
                update = v1.EntryUpdate(entry=t1.DataEntry(path=SPEED, value=t1.Datapoint(
                    float=signals.speeds[i % len(signals.speeds)])), fields=[t1.FIELD_VALUE])
                yield v1.SubscribeResponse(updates=[update])
                i += 1
                await asyncio.sleep(signals.interval_s)

    class ValV2(g2.VALServicer):  # type: ignore[misc]
        async def GetServerInfo(self, request: Any, context: Any) -> Any:
            return v2.GetServerInfoResponse(name="stand-in databroker (kuksa-client protos)", version="test")

        async def ListMetadata(self, request: Any, context: Any) -> Any:
            paths = signals.under(request.root)
            if not paths:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no signal under {request.root}")
            metadata = []
            for i, path in enumerate(paths):
                kind, datatype = enum(*signals.catalog[path], prefix=True)
                metadata.append(t2.Metadata(path=path, id=i, entry_type=t2.EntryType.Value(kind),
                                            data_type=t2.DataType.Value(datatype)))
            return v2.ListMetadataResponse(metadata=metadata)

        async def Subscribe(self, request: Any, context: Any) -> Any:
            unknown = [p for p in request.signal_paths if p not in signals.catalog]
            if unknown:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown signals {unknown}")
            signals.subscribers["kuksa.val.v2"] += 1
            i = 0
            while True:
                speed = signals.speeds[i % len(signals.speeds)]
                yield v2.SubscribeResponse(entries={p: t2.Datapoint(value=t2.Value(float=speed))
                                                    for p in request.signal_paths})
                i += 1
                await asyncio.sleep(signals.interval_s)

    return ValV1(), ValV2()


def velocitas_protos(wheelhouse: Path, into: Path) -> Any:
    """velocitas-sdk's generated sdv.databroker.v1 modules, from its wheel (only them: its
    package __init__ is replaced by an empty one, nothing else of the SDK is imported)."""
    wheel = next(wheelhouse.glob("velocitas_sdk-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        for name in whl.namelist():
            if name.startswith("velocitas_sdk/proto/") and name.endswith(".py"):
                whl.extract(name, into)
    (into / "velocitas_sdk" / "__init__.py").write_text("")
    if str(into) not in sys.path:
        sys.path.insert(0, str(into))
    from velocitas_sdk.proto import broker_pb2, broker_pb2_grpc, types_pb2  # type: ignore[import-not-found]

    return broker_pb2, broker_pb2_grpc, types_pb2


def _velocitas_servicer(signals: VehicleSignals, protos: Any) -> Any:
    broker_pb2, broker_pb2_grpc, types_pb2 = protos

    def point(value: float) -> Any:
        dp = types_pb2.Datapoint(float_value=value)
        dp.timestamp.GetCurrentTime()
        return dp

    class Broker(broker_pb2_grpc.BrokerServicer):  # type: ignore[misc]
        async def GetDatapoints(self, request: Any, context: Any) -> Any:
            return broker_pb2.GetDatapointsReply(datapoints={p: point(signals.speeds[0]) for p in request.datapoints})

        async def GetMetadata(self, request: Any, context: Any) -> Any:
            names = list(request.names) or sorted(signals.catalog)
            return broker_pb2.GetMetadataReply(list=[
                types_pb2.Metadata(id=i, name=n, data_type=types_pb2.FLOAT, description=signals.catalog[n][0])
                for i, n in enumerate(names) if n in signals.catalog])

        async def Subscribe(self, request: Any, context: Any) -> Any:
            paths = [p.strip() for p in request.query.removeprefix("SELECT").split(",") if p.strip()]
            unknown = [p for p in paths if p not in signals.catalog]
            if unknown:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown datapoints {unknown}")
            signals.subscribers["sdv.databroker.v1"] += 1
            i = 0
            while True:
                speed = signals.speeds[i % len(signals.speeds)]
                yield broker_pb2.SubscribeReply(fields={p: point(speed) for p in paths})
                i += 1
                await asyncio.sleep(signals.interval_s)

    return Broker()


@dataclass
class StandInDatabroker:
    signals: VehicleSignals
    port: int
    server: Any

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def start_stand_in(signals: VehicleSignals, velocitas: Any | None = None, *,
                         v2: bool = True) -> StandInDatabroker:
    """kuksa.val v1 (and v2 unless told not: an older databroker), and sdv.databroker.v1 when
    `velocitas` (`velocitas_protos()`) is given."""
    from kuksa.val.v1 import val_pb2_grpc as g1
    from kuksa.val.v2 import val_pb2_grpc as g2

    server = grpc.aio.server()
    val_v1, val_v2 = _kuksa_servicers(signals)
    g1.add_VALServicer_to_server(val_v1, server)
    if v2:
        g2.add_VALServicer_to_server(val_v2, server)
    if velocitas is not None:
        velocitas[1].add_BrokerServicer_to_server(_velocitas_servicer(signals, velocitas), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return StandInDatabroker(signals, port, server)


class PushingDatabroker:
    """Signal values a test sets (`await set(path, value)`), pushed to subscribers on change."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values = dict(values)
        self.changed = asyncio.Condition()
        self.subscriptions: list[list[str]] = []
        self.port = 0
        self.server: Any = None

    async def set(self, path: str, value: float) -> None:
        async with self.changed:
            self.values[path] = value
            self.changed.notify_all()

    def servicer(self) -> Any:
        from kuksa.val.v1 import types_pb2, val_pb2, val_pb2_grpc

        broker = self

        class Val(val_pb2_grpc.VALServicer):  # type: ignore[misc]
            async def GetServerInfo(self, request: Any, context: Any) -> Any:
                return val_pb2.GetServerInfoResponse(name="stand-in databroker (pushing)", version="test")

            async def Subscribe(self, request: Any, context: Any) -> Any:
                paths = [e.path for e in request.entries]
                broker.subscriptions.append(paths)
                sent: dict[str, float] = {}
                while True:
                    async with broker.changed:
                        fresh = {p: v for p, v in broker.values.items() if p in paths and sent.get(p) != v}
                        if not fresh:
                            await broker.changed.wait()
                            continue
                    sent.update(fresh)
                    yield val_pb2.SubscribeResponse(updates=[
                        val_pb2.EntryUpdate(entry=types_pb2.DataEntry(path=p, value=types_pb2.Datapoint(float=v)),
                                            fields=[types_pb2.FIELD_VALUE])
                        for p, v in fresh.items()
                    ])

        return Val()

    async def serve(self) -> PushingDatabroker:
        """Serve (again: on the same port as before)."""
        from kuksa.val.v1 import val_pb2_grpc

        server = grpc.aio.server()
        val_pb2_grpc.add_VALServicer_to_server(self.servicer(), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self.server = server
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Mosquitto:
    """Debian's mosquitto on 127.0.0.1:<free port>, anonymous clients allowed."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def subscribe(self, topic: str, count: int, timeout_s: float) -> list[str]:
        """`count` messages of `topic` (mosquitto_sub, the broker's own client)."""
        out = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-t", topic,
                              "-C", str(count), "-W", str(int(timeout_s))],
                             capture_output=True, text=True, timeout=timeout_s + 5, check=False)
        return out.stdout.splitlines()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(workdir: Path) -> Mosquitto:
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if binary is None or shutil.which("mosquitto_sub") is None:
        pytest.skip("no mosquitto / mosquitto_sub here (deploy/mqtt-setup.sh installs Debian's)")
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return Mosquitto(port, process)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"mosquitto did not listen on {port}")


def velocitas_wheelhouse() -> Path:
    """The example's pinned requirements as wheels for both platforms, once per machine."""
    requirements = VELOCITAS_APP / "app" / "requirements.txt"
    key = hashlib.sha256(requirements.read_bytes() + repr(PLATFORMS).encode()).hexdigest()[:16]
    where = Path.home() / ".cache" / "sdv-tests" / f"velocitas-wheels-{key}"
    if (where / ".complete").is_file():
        return where
    from sdv_packager.build.wheels import compatible_platforms

    where.mkdir(parents=True, exist_ok=True)
    for platform in PLATFORMS:
        tags = [f"--platform={t}" for t in [*compatible_platforms(platform), "any"]]
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--only-binary=:all:", "--dest", str(where), "--python-version", "3.11",
             "--implementation", "cp", *tags, "-r", str(requirements)],
            capture_output=True, text=True, timeout=300, check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"velocitas-sdk wheels cannot be fetched here (no package index): {result.stderr[-300:]}")
    (where / ".complete").write_text("")
    return where
