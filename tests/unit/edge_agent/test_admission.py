"""Admission of desired entries and the downgrade order: pure rules, no servers."""

from __future__ import annotations

from sdv_edge_agent.domain.admission import admission_problem, config_problems, is_downgrade, valid_app_name
from sdv_events.schemas.deployment import DesiredApp
from sdv_events.schemas.packages import PackageInfo


def package(name: str) -> PackageInfo:
    return PackageInfo(name=name, version="1.0.0", channel="dev", digest="d" * 64, size=1,
                       object_name="x", manifest_digest="m", signature="s", key_id="k",
                       entry_point="main.py", python_version="3.11", runtime="native")


def test_only_the_packagers_app_names_are_valid_keys() -> None:
    assert valid_app_name("speed-warn2")
    for bad in ("../../victim", "a", "Upper", "-x", "x-", "a--b", "a.b", "a/b", "", "x" * 65, "1abc"):
        assert not valid_app_name(bad), bad


def test_a_key_that_differs_from_the_package_name_is_refused() -> None:
    assert admission_problem("probe", DesiredApp(package=package("probe"))) is None
    problem = admission_problem("other", DesiredApp(package=package("probe")))
    assert problem is not None
    assert "not the package's name" in problem


def test_loader_and_agent_owned_variables_are_refused_and_ordinary_ones_pass() -> None:
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONWARNINGS", "pythonpath", "LD_PRELOAD",
                 "LD_LIBRARY_PATH", "GCONV_PATH", "GLIBC_TUNABLES", "PATH", "VIRTUAL_ENV", "HOME", "TMPDIR",
                 "SDV_APP_NAME", "KUKSA_DATA_BROKER_ADDRESS"):
        assert config_problems({name: "x"}), name
    assert config_problems({"A=B": "x"})
    assert config_problems({"OK": "a\0b"})
    assert config_problems({"SPEED_LIMIT": "120", "LOG_LEVEL": "debug", "_X1": ""}) == []


def test_downgrades_follow_semver_precedence() -> None:
    assert is_downgrade("1.10.0", "1.9.0")
    assert is_downgrade("2.0.0", "2.0.0-rc.1")
    assert is_downgrade("1.0.0-rc.10", "1.0.0-rc.2")
    assert is_downgrade("1.0.0-beta", "1.0.0-alpha")
    assert not is_downgrade("1.0.0", "1.0.1")
    assert not is_downgrade("1.0.0-rc.1", "1.0.0")
    assert not is_downgrade("1.0.0", "1.0.0+build.7")
    assert is_downgrade("1.0.0", "not-a-version")
