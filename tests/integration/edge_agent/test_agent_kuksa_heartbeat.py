"""KUKSA databroker lookup and address hand-over, the example speed-monitor reading Vehicle.Speed,
and heartbeats with metrics.

No real KUKSA databroker can run here (it is a Rust program out of reach, FACTS.md), so a
*stand-in* gRPC server built from kuksa-client's own shipped `kuksa.val.v1`/`v2` servicers plays
it (tests/integration/vehicle_support.py): GetServerInfo, Get, Subscribe and ListMetadata, which
is what kuksa-client's VSSClient and the agent's catalogue lookup use.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

EXAMPLES = Path(__file__).parents[3] / "examples" / "apps"


vehicle = sys.modules["sdv_vehicle_test_support"]  # tests/integration/vehicle_support.py


@pytest.fixture
async def databroker() -> AsyncIterator[tuple[Any, int]]:
    stand_in = await vehicle.start_stand_in(vehicle.VehicleSignals(speeds=[100.0, 150.0, 90.0], interval_s=0.2))
    try:
        yield stand_in.signals, stand_in.port
    finally:
        await stand_in.server.stop(0)


ENV_APP = """\
import os, time
for name in ("KUKSA_DATA_BROKER_ADDRESS", "KUKSA_DATA_BROKER_PORT", "SDV_VEHICLEDATABROKER_ADDRESS",
             "SDV_MIDDLEWARE_TYPE", "SDV_MQTT_ADDRESS", "GREETING"):
    print(name, "=", os.environ.get(name), flush=True)
x = bytearray(20 * 1024 * 1024)  # something for the rss metric to see
while True:
    sum(range(20000))
    time.sleep(0.01)
"""


async def test_apps_get_the_stand_in_databroker_address_and_heartbeats_carry_metrics(
    fleet: Any, harness: Any, tmp_path: Path, databroker: tuple[Any, int]
) -> None:
    from sdv_events.schemas.deployment import DesiredApp

    _, port = databroker
    hb: list[dict[str, Any]] = []

    async def on_hb(msg: Any) -> None:
        hb.append(msgspec.json.decode(msg.data))

    await fleet.nc.subscribe("sdv.hb.car-kuksa", cb=on_hb)
    pkg = await fleet.publish(harness.make_app(tmp_path, "envy", "1.0.0", ENV_APP))
    fleet.agent("car-kuksa", SDV_AGENT_DATABROKER=f"127.0.0.1:{port}")
    await fleet.desire("car-kuksa", 1, {"envy": DesiredApp(package=pkg, config={"GREETING": "hi"})})
    await fleet.until(lambda: len(fleet.lines("car-kuksa", "envy")) >= 6, what="env lines")
    # Both conventions: kuksa-client's host + port, and the URLs velocitas-sdk parses.
    assert fleet.lines("car-kuksa", "envy")[:6] == [
        "KUKSA_DATA_BROKER_ADDRESS = 127.0.0.1", f"KUKSA_DATA_BROKER_PORT = {port}",
        f"SDV_VEHICLEDATABROKER_ADDRESS = grpc://127.0.0.1:{port}", "SDV_MIDDLEWARE_TYPE = native",
        "SDV_MQTT_ADDRESS = mqtt://127.0.0.1:1883", "GREETING = hi",
    ]

    def with_metrics() -> dict[str, Any] | None:
        for beat in reversed(hb):
            app = beat["apps"].get("envy")
            if app and app.get("rss_bytes") and app.get("cpu_pct") and app.get("uptime_s") and beat["databroker"]:
                return beat
        return None

    beat = await fleet.until(with_metrics, timeout=15, what="a heartbeat with app metrics")
    assert beat["device_id"] == "car-kuksa"
    assert "stand-in databroker" in beat["databroker"]
    assert beat["apps"]["envy"]["state"] == "RUNNING"
    assert beat["apps"]["envy"]["rss_bytes"] > 20 * 1024 * 1024
    assert 0 < beat["apps"]["envy"]["cpu_pct"] < 100
    assert beat["apps"]["envy"]["restarts"] == 0
    device = beat["device"]
    assert device["mem_total_bytes"] > 0
    assert 0 <= device["disk_pct"] <= 100
    assert [b["seq"] for b in hb] == list(range(hb[0]["seq"], hb[0]["seq"] + len(hb)))


@pytest.fixture(scope="session")
def kuksa_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kuksa-client and its dependencies as wheels, for the example app's offline install."""
    where = tmp_path_factory.mktemp("wheelhouse")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--dest", str(where), "--python-version", "3.11", "--implementation", "cp",
         "--platform", "manylinux2014_x86_64", "--platform", "any", "kuksa-client>=0.4"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"kuksa-client wheels cannot be fetched here (no package index): {result.stderr[-300:]}")
    return where


async def test_speed_monitor_example_reads_vehicle_speed_from_a_stand_in_databroker(
    fleet: Any, harness: Any, databroker: tuple[Any, int], kuksa_wheelhouse: Path
) -> None:
    from sdv_events.schemas.deployment import DesiredApp
    from sdv_packager.application import package_info
    from sdv_packager.build.pipeline import build_package
    from sdv_packager.build.wheels import WheelSource

    servicer, port = databroker
    built = build_package(EXAMPLES / "speed-monitor", harness.catalog(),
                          WheelSource(find_links=kuksa_wheelhouse, no_index=True,
                                      platforms=("manylinux2014_x86_64",)))
    pkg = package_info(built, fleet.signer)
    assert pkg.bundled_wheels  # kuksa-client and friends travel inside the package
    await fleet.put_artifact(pkg.object_name, built.artifact)
    fleet.agent("car-speed", SDV_AGENT_DATABROKER=f"127.0.0.1:{port}")
    await fleet.desire("car-speed", 1, {"speed-monitor": DesiredApp(package=pkg, config={"SPEED_LIMIT_KMH": "120"})})

    await fleet.until(lambda: any(line.startswith("WARNING speed 150.0") for line in fleet.lines("car-speed", "speed-monitor")),
                      timeout=60, what="the speed warning")
    lines = fleet.lines("car-speed", "speed-monitor")
    assert lines[0] == "speed-monitor: watching Vehicle.Speed, limit 120 km/h"
    assert "WARNING speed 150.0 km/h over limit 120 km/h" in lines
    await fleet.until(lambda: "OK speed 90.0 km/h back under 120 km/h" in fleet.lines("car-speed", "speed-monitor"),
                      what="the all-clear")
    assert servicer.subscribers["kuksa.val.v2"] + servicer.subscribers["kuksa.val.v1"] >= 1
    await fleet.until_state("car-speed", "speed-monitor", "RUNNING", healthy=True)
