"""What apps are handed for the vehicle's middleware, and which wheel target a device installs."""

from __future__ import annotations

import pytest

from sdv_edge_agent.adapters.middleware import parse_mqtt_address, vehicle_env
from sdv_edge_agent.domain.platforms import fitting_target, machine_arch
from sdv_events.package_format import WheelTarget


def test_apps_get_the_databroker_in_both_conventions_and_the_mqtt_broker() -> None:
    assert vehicle_env(("127.0.0.1", 55555), ("10.0.0.2", 1884)) == {
        "KUKSA_DATA_BROKER_ADDRESS": "127.0.0.1",
        "KUKSA_DATA_BROKER_PORT": "55555",
        "SDV_MIDDLEWARE_TYPE": "native",
        "SDV_VEHICLEDATABROKER_ADDRESS": "grpc://127.0.0.1:55555",  # velocitas-sdk parses a URL
        "SDV_MQTT_ADDRESS": "mqtt://10.0.0.2:1884",
    }
    assert vehicle_env(("::1", 55555), ("::1", 1883))["SDV_VEHICLEDATABROKER_ADDRESS"] == "grpc://[::1]:55555"


@pytest.mark.parametrize(("text", "address"), [
    ("mqtt://broker:1884", ("broker", 1884)), ("tcp://10.0.0.1:1883", ("10.0.0.1", 1883)),
    ("broker:1999", ("broker", 1999)), ("broker", ("broker", 1883)), ("mqtt://[::1]:1883", ("::1", 1883)),
])
def test_mqtt_addresses_are_read_with_or_without_a_scheme(text: str, address: tuple[str, int]) -> None:
    assert parse_mqtt_address(text) == address


def test_a_device_installs_its_own_arch_before_a_pure_target_and_nothing_of_another_python() -> None:
    x86 = WheelTarget(python="3.11", platform="manylinux2014_x86_64", arch="x86_64", wheels=["a.whl"])
    arm = WheelTarget(python="3.11", platform="manylinux2014_aarch64", arch="aarch64", wheels=["b.whl"])
    pure = WheelTarget(python="3.12", platform="manylinux2014_x86_64", arch="any", wheels=["c.whl"])
    assert fitting_target([x86, arm], "3.11", "aarch64") == arm
    assert fitting_target([x86, arm], "3.11", "arm64") == arm  # macOS spelling
    assert fitting_target([x86, arm, pure], "3.12", "riscv64") == pure
    assert fitting_target([x86, arm], "3.12", "x86_64") is None
    assert machine_arch("AMD64") == "x86_64"
