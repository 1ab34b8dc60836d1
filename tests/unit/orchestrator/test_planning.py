"""Wave planning and device eligibility (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdv_events.errors import DomainError
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import Strategy
from sdv_orchestrator.domain.planning import (
    DeviceFacts,
    eligible,
    package_arches,
    plan_waves,
    wave_sizes,
)


def pkg(**kw: object) -> PackageInfo:
    base = dict(name="app", version="1.0.0", digest="d" * 64, size=1, object_name="d" * 64,
                manifest_digest="m", signature="s", key_id="k", channel="stable", runtime="native",
                entry_point="main.py", python_version="3.11")
    return PackageInfo(**(base | kw))  # type: ignore[arg-type]


def test_canary_waves_are_cumulative_and_end_at_everyone() -> None:
    assert wave_sizes(["1", "10%", "50%", "100%"], 100) == [1, 9, 40, 50]
    assert wave_sizes(["1", "10%"], 100) == [1, 9, 90]
    assert wave_sizes(["1", "10%", "100%"], 5) == [1, 4]  # 10% of 5 rounds up to 1: no empty wave
    assert wave_sizes(["50"], 20) == [20]


@pytest.mark.parametrize("bad", ["0", "-1", "0%", "150%", "ten", ""])
def test_bad_wave_specs_are_refused(bad: str) -> None:
    with pytest.raises(DomainError) as caught:
        wave_sizes([bad], 10)
    assert caught.value.code == "invalid_request"


@given(
    devices=st.lists(st.text("abcdef0123", min_size=1, max_size=6), max_size=60),
    kind=st.sampled_from(["all-at-once", "rolling", "canary"]),
    batch=st.integers(1, 9),
    spec=st.lists(st.one_of(st.integers(1, 80).map(str), st.integers(1, 100).map(lambda p: f"{p}%")),
                  min_size=1, max_size=5),
)
def test_every_device_lands_in_exactly_one_wave(devices, kind, batch, spec) -> None:
    waves = plan_waves(devices, Strategy(kind=kind, waves=spec, batch_size=batch))
    flat = [d for wave in waves for d in wave]
    assert flat == list(dict.fromkeys(devices))
    assert all(waves)


def test_ineligible_devices_are_excluded_with_a_reason() -> None:
    package = pkg(vss_reads=["Vehicle.Speed"], bundled_wheels=["grpcio-1-cp311-cp311-manylinux2014_x86_64.whl"])
    devices = [
        DeviceFacts("ok", kuksa=True),
        DeviceFacts("arm", arch="aarch64", kuksa=True),
        DeviceFacts("docker-only", runtimes=("docker",), kuksa=True),
        DeviceFacts("no-kuksa"),
        DeviceFacts("old-python", python_version="3.9", kuksa=True),
        DeviceFacts("pending", status="pending", kuksa=True),
    ]
    ok, excluded = eligible(package, devices, package_arches(package))
    assert ok == ["ok"]
    assert excluded == {
        "arm": "arch aarch64 not supported by the package (x86_64)",
        "docker-only": "no native runtime (has docker)",
        "no-kuksa": "no KUKSA databroker",
        "old-python": "python 3.9, package needs 3.11",
        "pending": "device is pending",
    }


def test_pure_python_packages_run_on_any_arch() -> None:
    assert package_arches(pkg(bundled_wheels=["six-1.16.0-py2.py3-none-any.whl"])) == frozenset()


def test_a_multi_platform_package_fits_every_device_one_of_its_platforms_fits() -> None:
    package = pkg(platforms=["3.11/aarch64", "3.11/x86_64"], bundled_wheels=[
        "grpcio-1.64.1-cp311-cp311-manylinux_2_17_aarch64.whl",
        "grpcio-1.64.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"])
    devices = [DeviceFacts("orin", arch="aarch64"), DeviceFacts("pc", arch="x86_64", python_version="3.11.2"),
               DeviceFacts("pi", arch="armv7l"), DeviceFacts("new-python", arch="aarch64", python_version="3.12.1")]
    ok, excluded = eligible(package, devices, package_arches(package))
    assert ok == ["orin", "pc"]
    assert excluded == {
        "pi": "no platform of the package fits armv7l/python 3.11 (it carries 3.11/aarch64, 3.11/x86_64)",
        "new-python": "no platform of the package fits aarch64/python 3.12 (it carries 3.11/aarch64, 3.11/x86_64)",
    }
    # A python whose wheels are all pure fits any arch; a package may carry several pythons.
    pure = pkg(platforms=["3.11/any", "3.12/aarch64"])
    ok, excluded = eligible(pure, devices, package_arches(pure))
    assert ok == ["new-python", "orin", "pc", "pi"]
    assert excluded == {}


def test_apps_that_need_mqtt_leave_out_devices_without_a_broker() -> None:
    package = pkg(mqtt=True)
    ok, excluded = eligible(package, [DeviceFacts("with", mqtt=True), DeviceFacts("without")])
    assert ok == ["with"]
    assert excluded == {"without": "no MQTT broker (the app publishes and subscribes through one)"}


def test_devices_whose_databroker_lacks_a_declared_signal_or_actuator_are_excluded() -> None:
    catalog = {"Vehicle.Speed": "sensor", "Vehicle.Body.Horn.IsActive": "actuator",
               "Vehicle.Cabin.Seat.Row1.DriverSide.Position": "sensor"}
    package = pkg(vss_reads=["Vehicle.Speed"], vss_writes=["Vehicle.Body.Horn.IsActive"])
    seat = pkg(vss_reads=["Vehicle.Speed"], vss_writes=["Vehicle.Cabin.Seat.Row1.DriverSide.Position"])
    devices = [
        DeviceFacts("full", kuksa=True, catalog=catalog),
        DeviceFacts("no-horn", kuksa=True, catalog={"Vehicle.Speed": "sensor"}),
        DeviceFacts("unknown-catalog", kuksa=True),  # not reported: no signal is checked
    ]
    ok, excluded = eligible(package, devices)
    assert ok == ["full", "unknown-catalog"]
    assert excluded == {"no-horn": "databroker lacks signal Vehicle.Body.Horn.IsActive"}
    ok, excluded = eligible(seat, devices[:1])
    assert excluded == {"full": "databroker serves Vehicle.Cabin.Seat.Row1.DriverSide.Position as a sensor, "
                                "not an actuator to set"}
