"""Settings of every service and of the agent: one mechanism (pydantic-settings), every setting
has its variable, a bad value is one line naming it and exit status 2 — never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdv_edge_agent.settings import AgentOptions, SettingsError, flag_of, load_settings
from sdv_events.service import ServiceSettings
from sdv_events.settings import Settings, variable_of
from sdv_monitor.settings import MonitorSettings
from sdv_orchestrator.settings import OrchestratorSettings
from sdv_packager.settings import PackagerSettings
from sdv_registry.settings import RegistrySettings

SERVICES: list[type[ServiceSettings]] = [PackagerSettings, RegistrySettings, OrchestratorSettings,
                                         MonitorSettings]
KEYS = ["--packager-key", "k", "--orchestrator-key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]


@pytest.mark.parametrize("settings", [*SERVICES, AgentOptions], ids=lambda c: c.__name__)
def test_every_setting_has_an_environment_variable(settings: type[Settings]) -> None:
    # `service` is the program's own name; `schema_name` reads SDV_<SERVICE>_SCHEMA.
    without = {name for name in settings.model_fields if name not in {"service", "schema_name"}
               and not (variable_of(settings.model_fields[name]) or "").startswith("SDV_")}
    assert without == set()


def test_the_documented_variable_names_are_kept() -> None:
    every = {v for cls in [*SERVICES, AgentOptions] for v in cls.variables().values()}
    assert {"SDV_NATS_URL", "SDV_DATABASE_URL", "SDV_NATS_CREDS", "SDV_NATS_CA", "SDV_LOG_LEVEL",
            "SDV_MONITOR_HTTP_PORT", "SDV_MONITOR_HTTP_HOST", "SDV_MONITOR_ALERT_EVERY_S",
            "SDV_MONITOR_ALERT_OFFLINE_AFTER_S", "SDV_MONITOR_ALERT_CRASH_RESTARTS",
            "SDV_MONITOR_ALERT_SERVICE_GRACE_S", "SDV_PACKAGER_SIGNING_KEY", "SDV_VSS_CATALOG",
            "SDV_WHEELHOUSE", "SDV_WHEELS_OFFLINE", "SDV_PACKAGER_BUILD_USER", "SDV_PACKAGER_PIP_COMMAND",
            "SDV_TRUST_FILE", "SDV_FLEET_TOKEN", "SDV_REGISTRY_CREDENTIAL_TTL_S",
            "SDV_REGISTRY_HEARTBEAT_SILENCE_S", "SDV_REGISTRY_ANNOUNCE_RATE", "SDV_REGISTRY_ANNOUNCE_BURST",
            "SDV_REGISTRY_ANNOUNCE_PER_DEVICE_RATE", "SDV_REGISTRY_ANNOUNCE_PER_DEVICE_BURST",
            "SDV_ORCHESTRATOR_SIGNING_KEY", "SDV_DATA_DIR", "SDV_MAX_EVENT_BYTES", "SDV_IDEMPOTENCY_TTL_S",
            "SDV_RELAY_STUCK_AFTER_S", "SDV_SCHEMA_SETUP", "SDV_CONSUMER_MAX_LAG_S",
            "SDV_EVENTS_MAX_AGE_S", "SDV_EVENTS_MAX_BYTES", "SDV_DEVICE_ID", "SDV_AGENT_NATS_CREDS",
            "SDV_AGENT_DATA_DIR", "SDV_AGENT_PACKAGER_KEY", "SDV_AGENT_PACKAGER_KEY_FILE",
            "SDV_AGENT_ORCHESTRATOR_KEY", "SDV_AGENT_ORCHESTRATOR_KEY_FILE", "SDV_AGENT_DATABROKER",
            "SDV_AGENT_HEARTBEAT_S", "SDV_AGENT_MONITOR_S", "SDV_AGENT_STOP_TIMEOUT_S",
            "SDV_AGENT_RESTART_BASE_S", "SDV_AGENT_RESTART_MAX_S", "SDV_AGENT_CRASH_LOOP",
            "SDV_AGENT_CRASH_WINDOW_S", "SDV_AGENT_ENROL", "SDV_AGENT_ENROL_CREDS", "SDV_AGENT_FLEET_TOKEN",
            "SDV_AGENT_HARDWARE_TYPE", "SDV_AGENT_APP_PYTHON", "SDV_AGENT_DOCKER_HOST",
            "SDV_AGENT_DOCKER_BASE_IMAGE", "SDV_AGENT_SIMULATE", "SDV_AGENT_SIM_PREFIX",
            "SDV_AGENT_SIM_FAILURE_RATE", "SDV_AGENT_SIM_FAIL_VERSIONS", "SDV_AGENT_SIM_SEED",
            "SDV_AGENT_SIM_LOG_EVERY_S"} <= every


def test_every_agent_setting_but_the_suites_data_dir_has_a_flag() -> None:
    help_text = subprocess.run([sys.executable, "-m", "sdv_edge_agent", "--help"], capture_output=True,
                               text=True, check=True).stdout
    missing = [flag_of(name) for name in AgentOptions.model_fields
               if name != "suite_data_dir" and flag_of(name) not in help_text]
    assert missing == []


def test_the_environment_fills_what_the_constructor_does_not_give() -> None:
    env = {"SDV_NATS_URL": "nats://env:4222", "SDV_MONITOR_HTTP_PORT": "9000", "SDV_MONITOR_SCHEMA": "mon2",
           "nats_url": "nats://not-a-variable:1", "SDV_LOG_LEVEL": "debug", "SDV_MONITOR_HTTP_HOST": ""}
    loaded = MonitorSettings.load(env, nats_url="nats://given:4222")
    assert (loaded.nats_url, loaded.http_port, loaded.schema_name) == ("nats://given:4222", 9000, "mon2")
    assert loaded.log_level == "DEBUG"
    assert loaded.http_host == "127.0.0.1"  # an empty variable is unset
    assert MonitorSettings.load(env).nats_url == "nats://env:4222"  # never the lower-case `nats_url`


def test_a_packagers_and_orchestrators_key_live_in_the_data_dir_unless_named() -> None:
    env = {"SDV_DATA_DIR": "/srv/sdv", "SDV_PACKAGER_PIP_COMMAND": "python3 -m pip --isolated"}
    packager = PackagerSettings.load(env)
    assert packager.signing_key_path == Path("/srv/sdv/keys/packager-ed25519.pem")
    assert packager.pip_command == ["python3", "-m", "pip", "--isolated"]
    assert OrchestratorSettings.load(env).signing_key_path == Path("/srv/sdv/keys/orchestrator-ed25519.pem")
    named = OrchestratorSettings.load({**env, "SDV_ORCHESTRATOR_SIGNING_KEY": "/k/o.pem"})
    assert named.signing_key_path == Path("/k/o.pem")


@pytest.mark.parametrize(("env", "expected"), [
    ({"SDV_MONITOR_HTTP_PORT": "abc"}, "SDV_MONITOR_HTTP_PORT='abc': Input should be a valid integer"),
    ({"SDV_MONITOR_HTTP_PORT": "70000"}, "SDV_MONITOR_HTTP_PORT='70000': Input should be less than"),
    ({"SDV_IDEMPOTENCY_TTL_S": "-1"}, "SDV_IDEMPOTENCY_TTL_S='-1': Input should be greater than 0"),
    ({"SDV_LOG_LEVEL": "loud"}, "SDV_LOG_LEVEL='loud': must be one of DEBUG"),
    ({"SDV_SCHEMA_SETUP": "maybe"}, "SDV_SCHEMA_SETUP='maybe': Input should be a valid boolean"),
])
def test_a_bad_value_is_refused_in_one_line_naming_its_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as refused:
        MonitorSettings.load(env)
    assert str(refused.value).startswith(expected)
    assert "\n" not in str(refused.value)


def test_the_agents_heartbeat_is_honoured_from_the_flag_and_zero_is_refused() -> None:
    assert load_settings(["--device-id", "car-1", "--heartbeat-s", "0.5", *KEYS], {}).heartbeat_s == 0.5
    with pytest.raises(SettingsError, match=r"^--heartbeat-s='0': Input should be greater than 0"):
        load_settings(["--device-id", "car-1", "--heartbeat-s", "0", *KEYS], {"SDV_AGENT_HEARTBEAT_S": "7"})
    with pytest.raises(SettingsError, match=r"^SDV_AGENT_HEARTBEAT_S='abc': Input should be a valid number"):
        load_settings(["--device-id", "car-1", *KEYS], {"SDV_AGENT_HEARTBEAT_S": "abc"})
    with pytest.raises(SettingsError, match=r"^--crash-loop='0': Input should be greater than or equal to 1"):
        load_settings(["--device-id", "car-1", "--crash-loop", "0", *KEYS], {})


def _run(program: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    scrubbed = {k: v for k, v in os.environ.items() if not k.startswith("SDV_")}
    return subprocess.run([sys.executable, *program], capture_output=True, text=True, timeout=60,
                          env={**scrubbed, **env})


@pytest.mark.parametrize(("program", "env", "named"), [
    (["-m", "sdv_monitor"], {"SDV_MONITOR_HTTP_PORT": "abc"}, "SDV_MONITOR_HTTP_PORT='abc'"),
    (["-m", "sdv_registry"], {"SDV_REGISTRY_HEARTBEAT_SILENCE_S": "soon"}, "SDV_REGISTRY_HEARTBEAT_SILENCE_S"),
    (["-m", "sdv_orchestrator"], {"SDV_ORCHESTRATOR_TICK_S": "0"}, "SDV_ORCHESTRATOR_TICK_S='0'"),
    (["-m", "sdv_packager"], {"SDV_WHEELS_OFFLINE": "perhaps"}, "SDV_WHEELS_OFFLINE='perhaps'"),
    (["-m", "sdv_edge_agent", "--device-id", "car-1"], {"SDV_AGENT_HEARTBEAT_S": "abc"},
     "SDV_AGENT_HEARTBEAT_S='abc'"),
    (["-m", "sdv_edge_agent", "--device-id", "car-1", "--heartbeat-s", "0"], {}, "--heartbeat-s='0'"),
], ids=["monitor", "registry", "orchestrator", "packager", "agent-env", "agent-flag"])
def test_a_process_given_a_bad_setting_exits_2_with_one_line_and_no_traceback(
    program: list[str], env: dict[str, str], named: str,
) -> None:
    done = _run(program, **env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert named in lines[0]
