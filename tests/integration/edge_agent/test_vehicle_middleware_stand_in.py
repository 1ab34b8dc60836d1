"""The agent's view of the vehicle's middleware: the signal catalogue read from a databroker
STAND-IN (kuksa-client's protos; tests/integration/vehicle_support.py) over kuksa.val.v2
`ListMetadata` or, from an older databroker without v2, over v1 `Get` of metadata; and the MQTT
probe against Debian's real mosquitto."""

from __future__ import annotations

import sys
from pathlib import Path

from sdv_edge_agent.adapters.middleware import MqttBroker, probe_mqtt
from sdv_edge_agent.adapters.signal_catalog import fetch_catalog
from sdv_events.signal_catalog import CatalogEntry, catalog_digest

vehicle = sys.modules["sdv_vehicle_test_support"]


async def test_the_catalogue_is_the_same_over_kuksa_val_v2_and_v1_of_a_stand_in() -> None:
    signals = vehicle.VehicleSignals()
    new, old = await vehicle.start_stand_in(signals), await vehicle.start_stand_in(signals, v2=False)
    try:
        over_v2 = await fetch_catalog("127.0.0.1", new.port)
        over_v1 = await fetch_catalog("127.0.0.1", old.port)
    finally:
        await new.server.stop(0)
        await old.server.stop(0)
    assert over_v2 == over_v1 == {
        "Vehicle.Body.Horn.IsActive": CatalogEntry("actuator", "boolean"),
        "Vehicle.Cabin.Seat.Row1.DriverSide.Position": CatalogEntry("actuator", "uint16"),
        "Vehicle.Speed": CatalogEntry("sensor", "float"),
        "Vehicle.VehicleIdentification.VIN": CatalogEntry("attribute", "string"),
    }
    assert catalog_digest(over_v2) == catalog_digest(dict(reversed(over_v1.items())))  # order-free


async def test_an_mqtt_broker_is_found_by_its_connack_and_nothing_else_counts(tmp_path: Path) -> None:
    mqtt = vehicle.start_mosquitto(tmp_path)
    grpc_only = await vehicle.start_stand_in(vehicle.VehicleSignals())
    try:
        assert await probe_mqtt("127.0.0.1", mqtt.port)
        assert not await probe_mqtt("127.0.0.1", grpc_only.port)  # answers, but not MQTT
        assert not await probe_mqtt("127.0.0.1", vehicle.free_port())  # nothing listens
        broker = MqttBroker(f"127.0.0.1:{vehicle.free_port()}")  # configured but down: the usual one next
        broker.candidates = [broker.candidates[0], ("127.0.0.1", mqtt.port)]
        await broker.detect()
        assert broker.found == mqtt.url
        assert broker() == ("127.0.0.1", mqtt.port)
        mqtt.stop()
        await broker.detect()
        assert broker.found is None
    finally:
        mqtt.stop()
        await grpc_only.server.stop(0)
