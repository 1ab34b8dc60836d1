"""Agent configuration: what is required, what wins over what."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from sdv_edge_agent.settings import SettingsError, load_settings

ORCHESTRATOR_KEY = base64.b64encode(bytes(range(32))).decode()
KEYS = ["--packager-key", "k", "--orchestrator-key", ORCHESTRATOR_KEY]


def test_device_id_and_packager_key_are_required_with_a_message_that_says_what_to_set() -> None:
    with pytest.raises(SettingsError, match="SDV_DEVICE_ID"):
        load_settings([], {})
    with pytest.raises(SettingsError, match="SDV_AGENT_PACKAGER_KEY"):
        load_settings(["--device-id", "car-1"], {})
    with pytest.raises(SettingsError, match="subject token"):
        load_settings(["--device-id", "car.1", *KEYS], {})


def test_an_agent_without_a_valid_orchestrator_key_refuses_to_start(tmp_path: Path) -> None:
    """Secure by default: no mode acts on unsigned desired documents."""
    with pytest.raises(SettingsError, match="SDV_AGENT_ORCHESTRATOR_KEY"):
        load_settings(["--device-id", "car-1", "--packager-key", "k"], {})
    with pytest.raises(SettingsError, match="not base64"):
        load_settings(["--device-id", "car-1", "--packager-key", "k", "--orchestrator-key", "k!"], {})
    with pytest.raises(SettingsError, match="32 bytes"):
        load_settings(["--device-id", "car-1", "--packager-key", "k", "--orchestrator-key", "a2V5"], {})
    with pytest.raises(SettingsError, match="the packager's"):
        load_settings(["--device-id", "car-1", "--packager-key", ORCHESTRATOR_KEY,
                       "--orchestrator-key", ORCHESTRATOR_KEY], {})
    with pytest.raises(SettingsError, match="cannot read the key file"):
        load_settings(["--device-id", "car-1", "--packager-key", "k",
                       "--orchestrator-key-file", str(tmp_path / "missing.pub")], {})
    key = tmp_path / "orchestrator-ed25519.pub"
    key.write_text(ORCHESTRATOR_KEY + "\n")
    env = {"SDV_AGENT_ORCHESTRATOR_KEY_FILE": str(key)}
    s = load_settings(["--device-id", "car-1", "--packager-key", "k"], env)
    assert s.orchestrator_public_key == ORCHESTRATOR_KEY


def test_flags_win_over_env_and_env_over_defaults(tmp_path: Path) -> None:
    key = tmp_path / "packager.pub"
    key.write_text("a2V5\n")
    env = {"SDV_DEVICE_ID": "car-env", "SDV_NATS_URL": "nats://env:4222", "SDV_AGENT_PACKAGER_KEY_FILE": str(key),
           "SDV_AGENT_ORCHESTRATOR_KEY": ORCHESTRATOR_KEY,
           "SDV_AGENT_CRASH_LOOP": "3", "SDV_AGENT_ENROL": "1", "SDV_DATA_DIR": "/var/lib/sdv"}
    s = load_settings(["--nats-url", "nats://flag:4222"], env)
    assert (s.device_id, s.nats_url, s.packager_public_key) == ("car-env", "nats://flag:4222", "a2V5")
    assert s.crash_loop == 3
    assert s.enrol is True
    assert s.data_dir == Path("/var/lib/sdv/agent")
    assert load_settings(["--data-dir", str(tmp_path)], env).data_dir == tmp_path


def test_simulation_needs_no_device_id_and_checks_its_options() -> None:
    from sdv_edge_agent.simulation import device_ids

    s = load_settings(["--simulate", "30", *KEYS], {})
    assert s.simulation is not None
    assert (s.simulation.agents, s.simulation.prefix, s.device_id) == (30, "sim", "sim")
    assert (s.simulation.failure_rate, s.simulation.fail_versions, s.simulation.seed) == (0.0, ("*",), 0)
    env = {"SDV_AGENT_SIMULATE": "5", "SDV_AGENT_SIM_FAILURE_RATE": "0.25", "SDV_AGENT_SIM_SEED": "9",
           "SDV_AGENT_SIM_FAIL_VERSIONS": "2.*, 3.0.0", "SDV_AGENT_PACKAGER_KEY": "k",
           "SDV_AGENT_ORCHESTRATOR_KEY": ORCHESTRATOR_KEY}
    s = load_settings(["--device-id", "bench"], env)
    assert s.simulation is not None
    assert (s.simulation.agents, s.simulation.prefix, s.simulation.failure_rate, s.simulation.seed) == (
        5, "bench", 0.25, 9)
    assert s.simulation.fail_versions == ("2.*", "3.0.0")
    s = load_settings(["--sim-prefix", "lab", "--sim-failure-rate", "1", "--sim-seed", "3"], env)
    assert s.simulation is not None
    assert (s.simulation.prefix, s.simulation.failure_rate, s.simulation.seed) == ("lab", 1.0, 3)
    assert load_settings(["--device-id", "car-1", *KEYS], {}).simulation is None
    with pytest.raises(SettingsError, match="between 0 and 1"):
        load_settings(["--simulate", "2", "--sim-failure-rate", "1.5", *KEYS], {})
    with pytest.raises(SettingsError, match="prefix"):
        load_settings(["--simulate", "2", "--sim-prefix", "a.b", *KEYS], {})
    assert device_ids("sim", 3) == ["sim-0000", "sim-0001", "sim-0002"]
    assert device_ids("sim", 12_000)[-1] == "sim-11999"


def test_docker_host_comes_from_the_flag_then_the_agent_env_then_docker_host() -> None:
    base = ["--device-id", "car-1", *KEYS]
    assert load_settings(base, {}).docker_host is None  # no engine configured: native apps only
    assert load_settings(base, {}).docker_base_image == "python:3.11-slim"
    env = {"DOCKER_HOST": "unix:///run/docker.sock"}
    assert load_settings(base, env).docker_host == "unix:///run/docker.sock"
    env["SDV_AGENT_DOCKER_HOST"] = "unix:///run/agent-docker.sock"
    assert load_settings(base, env).docker_host == "unix:///run/agent-docker.sock"
    flagged = load_settings([*base, "--docker-host", "unix:///tmp/d.sock"], env)
    assert flagged.docker_host == "unix:///tmp/d.sock"
    assert load_settings(base, {"SDV_AGENT_DOCKER_BASE_IMAGE": "sdv/python:3.11"}).docker_base_image == \
        "sdv/python:3.11"
