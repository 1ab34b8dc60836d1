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
