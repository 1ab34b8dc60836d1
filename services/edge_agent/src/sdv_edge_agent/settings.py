"""Configuration of the edge agent: every setting has an environment variable and a flag; a flag
wins over its variable, a variable over the default (`sdv-agent --help` lists them all).

`AgentOptions` is what the user gave, validated by pydantic-settings (types and ranges: a bad
value is one line naming the flag or variable, exit status 2); `load_settings` resolves it into
`AgentSettings` — key files read, the data directory and the device id defaulted, the simulation
options gathered — which is what the agent runs with.

Simulation (scale tests of the control plane; see simulation.py): `--simulate N` runs N
SIMULATED agents in this process; then the device id is optional (the prefix names them).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator

from sdv_events.auth.client_tls import CA_ENV, NatsCaError, pinned_context
from sdv_events.desired_signing import parse_public_key, public_key_b64
from sdv_events.settings import Settings, SettingsError, log_level, variable_of

__all__ = ["SERVICE", "AgentOptions", "AgentSettings", "SettingsError", "SimulationSettings",
           "load_settings"]

SERVICE = "edge_agent"
DEFAULT_BASE_IMAGE = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


class AgentOptions(Settings):
    """What the agent is told, from flags (`--heartbeat-s`) and variables (`SDV_AGENT_HEARTBEAT_S`)."""

    device_id: str = Field("", validation_alias="SDV_DEVICE_ID",
                           description="this device's id (letters, digits, '-', '_'); required")
    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias="SDV_NATS_URL",
                          description="the fleet's NATS (tls://… starts TLS with its first byte)")
    nats_creds: Path | None = Field(None, validation_alias="SDV_AGENT_NATS_CREDS",
                                    description="a NATS .creds file: the device's user JWT + nkey seed")
    nats_ca: Path | None = Field(None, validation_alias=CA_ENV,
                                 description="the fleet's CA certificate (PEM) to pin: no other CA is "
                                 "trusted (`sdv up`: <data-dir>/nats/tls/ca.pem)")
    data_dir: Path | None = Field(None, validation_alias="SDV_AGENT_DATA_DIR",
                                  description="SQLite database, installed apps, console files "
                                  "(default $SDV_DATA_DIR/agent, else ~/.sdv-agent/<device id>)")
    suite_data_dir: Path | None = Field(None, validation_alias="SDV_DATA_DIR",
                                        description="the suite's data directory (container images)")
    packager_key: str = Field("", validation_alias="SDV_AGENT_PACKAGER_KEY",
                              description="the packager's Ed25519 public key(s), base64, comma-separated "
                              "during a rotation: no package is installed unless its signature "
                              "verifies; optional when enrolling with enrolment credentials (the "
                              "keys are then learned from the issued credentials), an override")
    packager_key_file: Path | None = Field(None, validation_alias="SDV_AGENT_PACKAGER_KEY_FILE",
                                           description="a file holding the packager's public key")
    orchestrator_key: str = Field("", validation_alias="SDV_AGENT_ORCHESTRATOR_KEY",
                                  description="the orchestrator's Ed25519 public key(s), base64: desired "
                                  "documents are acted on only when signed with one; optional and "
                                  "an override like the packager's")
    orchestrator_key_file: Path | None = Field(
        None, validation_alias="SDV_AGENT_ORCHESTRATOR_KEY_FILE",
        description="a file holding it (the orchestrator's <data-dir>/keys/orchestrator-ed25519.pub)")
    databroker: str | None = Field(None, validation_alias="SDV_AGENT_DATABROKER",
                                   description="host:port of the KUKSA databroker "
                                   "(then 127.0.0.1:55555 is tried)")
    mqtt: str | None = Field(None, validation_alias="SDV_AGENT_MQTT",
                             description="the vehicle's MQTT broker, mqtt://host:port or host:port "
                             "(then 127.0.0.1:1883 is tried); apps get it as SDV_MQTT_ADDRESS")
    heartbeat_s: float = Field(5.0, gt=0, validation_alias="SDV_AGENT_HEARTBEAT_S",
                               description="seconds between heartbeats")
    monitor_s: float = Field(1.0, gt=0, validation_alias="SDV_AGENT_MONITOR_S",
                             description="seconds between usage samples of app processes (and the "
                             "RSS watchdog)")
    stop_timeout_s: float = Field(10.0, ge=0, validation_alias="SDV_AGENT_STOP_TIMEOUT_S",
                                  description="seconds from SIGTERM to SIGKILL")
    restart_base_s: float = Field(0.5, gt=0, validation_alias="SDV_AGENT_RESTART_BASE_S",
                                  description="crash restarts wait base · 2^n seconds …")
    restart_max_s: float = Field(30.0, gt=0, validation_alias="SDV_AGENT_RESTART_MAX_S",
                                 description="… at most this long")
    crash_loop: int = Field(5, ge=1, validation_alias="SDV_AGENT_CRASH_LOOP",
                            description="this many crashes within the crash window: FAILED")
    crash_window_s: float = Field(120.0, gt=0, validation_alias="SDV_AGENT_CRASH_WINDOW_S",
                                  description="the crash window, seconds")
    log_level: str = Field("INFO", validation_alias="SDV_LOG_LEVEL",
                           description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    enrol: bool = Field(False, validation_alias="SDV_AGENT_ENROL",
                        description="announce to the registry and connect with the credentials it issues")
    enrol_creds: Path | None = Field(None, validation_alias="SDV_AGENT_ENROL_CREDS",
                                     description="the shared enrolment user's .creds file "
                                     "(operator-mode servers)")
    fleet_token: str | None = Field(None, validation_alias="SDV_AGENT_FLEET_TOKEN",
                                    description="a pre-authorisation or fleet token sent with the announce")
    hardware_type: str = Field("linux-generic", validation_alias="SDV_AGENT_HARDWARE_TYPE",
                               description="reported in the device's capabilities")
    app_python: str | None = Field(None, validation_alias="SDV_AGENT_APP_PYTHON",
                                   description="the interpreter app venvs are made from (default: the "
                                   "agent's own, or the system's of the same major.minor if sandboxed "
                                   "app users could not run the agent's)")
    docker_host: str | None = Field(None,
                                    validation_alias=AliasChoices("SDV_AGENT_DOCKER_HOST", "DOCKER_HOST"),
                                    description="the Docker engine for docker-mode apps, e.g. "
                                    "unix:///run/docker.sock (else $DOCKER_HOST; none: native apps only)")
    docker_base_image: str = Field(DEFAULT_BASE_IMAGE, validation_alias="SDV_AGENT_DOCKER_BASE_IMAGE",
                                   description="app images are built on it; must be in the engine "
                                   "(nothing is pulled)")
    simulate: int = Field(0, ge=0, validation_alias="SDV_AGENT_SIMULATE",
                          description="run this many SIMULATED agents in this process")
    sim_prefix: str | None = Field(None, validation_alias="SDV_AGENT_SIM_PREFIX",
                                   description="simulated device ids <prefix>-0000… (default: the "
                                   "device id, else sim)")
    sim_failure_rate: float = Field(0.0, validation_alias="SDV_AGENT_SIM_FAILURE_RATE",
                                    description="0..1, the share of (device, app, version) that crash")
    sim_fail_versions: str = Field("*", validation_alias="SDV_AGENT_SIM_FAIL_VERSIONS",
                                   description="versions the failure rate applies to, fnmatch, "
                                   "comma-separated")
    sim_seed: int = Field(0, validation_alias="SDV_AGENT_SIM_SEED",
                          description="picks which ones fail")
    sim_log_every_s: float = Field(0.0, ge=0, validation_alias="SDV_AGENT_SIM_LOG_EVERY_S",
                                   description="a console line per app every that many seconds "
                                   "(0: the banner only)")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return log_level(value)

    @field_validator("sim_failure_rate")
    @classmethod
    def _a_share(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("must be between 0 and 1")
        return value


# Options without a flag, and flags not spelt after their field.
_NO_FLAG = {"suite_data_dir"}
_FLAG_NAMES = {"packager_key": "--packager-key", "orchestrator_key": "--orchestrator-key"}
_SIMULATION = {"simulate", "sim_prefix", "sim_failure_rate", "sim_fail_versions", "sim_seed",
               "sim_log_every_s"}


def flag_of(field: str) -> str:
    return _FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


@dataclass(frozen=True)
class SimulationSettings:
    agents: int
    prefix: str
    failure_rate: float = 0.0
    fail_versions: tuple[str, ...] = ("*",)
    seed: int = 0
    log_every_s: float = 0.0


@dataclass(frozen=True)
class AgentSettings:
    """What the agent runs with: `AgentOptions` resolved."""

    device_id: str
    nats_url: str
    data_dir: Path
    packager_public_key: str
    orchestrator_public_key: str
    nats_creds: Path | None = None
    nats_ca: Path | None = None
    databroker: str | None = None
    mqtt: str | None = None
    heartbeat_s: float = 5.0
    monitor_s: float = 1.0
    stop_timeout_s: float = 10.0
    restart_base_s: float = 0.5
    restart_max_s: float = 30.0
    crash_loop: int = 5
    crash_window_s: float = 120.0
    log_level: str = "INFO"
    enrol: bool = False
    enrol_creds: Path | None = None
    fleet_token: str | None = None
    hardware_type: str = "linux-generic"
    app_python: str | None = None
    simulation: SimulationSettings | None = None
    docker_host: str | None = None
    docker_base_image: str = DEFAULT_BASE_IMAGE


def _parser() -> argparse.ArgumentParser:
    """One flag per option (values are validated by `AgentOptions`, so they stay strings here)."""
    parser = argparse.ArgumentParser(
        prog="sdv-agent", description="SDV Fleet edge agent. Every flag has an environment "
        "variable (in brackets); a flag wins over its variable.")
    simulation = parser.add_argument_group("simulation (scale tests: N simulated agents, no app processes)")
    for name, field in AgentOptions.model_fields.items():
        if name in _NO_FLAG:
            continue
        group = simulation if name in _SIMULATION else parser
        help_text = f"{field.description} [{variable_of(field)}]"
        if field.annotation is bool:
            group.add_argument(flag_of(name), dest=name, action="store_true", default=None, help=help_text)
        else:
            default = "" if field.default in (None, "") else f" (default {field.default})"
            group.add_argument(flag_of(name), dest=name, metavar=name.upper(), help=help_text + default)
    return parser


def _token_ok(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c in "-_" for c in text)


def _simulation(options: AgentOptions) -> SimulationSettings | None:
    if options.simulate == 0:
        return None
    prefix = options.sim_prefix or options.device_id or "sim"
    if not _token_ok(prefix):
        raise SettingsError(f"simulation prefix {prefix!r} must be letters, digits, '-' or '_'")
    return SimulationSettings(
        agents=options.simulate, prefix=prefix, failure_rate=options.sim_failure_rate,
        fail_versions=tuple(v.strip() for v in options.sim_fail_versions.split(",") if v.strip()),
        seed=options.sim_seed, log_every_s=options.sim_log_every_s)


def _key(key: str, file: Path | None) -> str:
    """A base64 public key: given, else read from its file."""
    if not key and file is not None:
        try:
            key = file.read_text().strip()
        except OSError as err:
            raise SettingsError(f"cannot read the key file {file}: {err.strerror or err}") from None
    return key


def key_list(text: str) -> tuple[str, ...]:
    """The keys of a comma-separated list (one key is a list of one)."""
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _orchestrator_key(options: AgentOptions, *, packager_key: str, learns: bool) -> str:
    """Required, like the packager's, unless learned from the credentials (`learns`): there is
    no mode that acts on unsigned desired documents."""
    key = _key(options.orchestrator_key, options.orchestrator_key_file)
    if not key:
        if learns:
            return ""
        raise SettingsError(
            "no orchestrator public key: pass --orchestrator-key(-file) or set SDV_AGENT_ORCHESTRATOR_KEY "
            "(`sdv.cmd.orchestrator.public_key`, or the orchestrator's keys/orchestrator-ed25519.pub), "
            "or enrol (--enrol --enrol-creds) with a registry that hands it out; "
            "without it no desired document can be trusted")
    try:
        parsed = [public_key_b64(parse_public_key(k)) for k in key_list(key)]
    except ValueError as err:
        raise SettingsError(f"the orchestrator public key is not an Ed25519 public key: {err}") from None
    if set(parsed) & set(key_list(packager_key)):
        raise SettingsError("the orchestrator public key is the packager's: the orchestrator signs "
                            "desired documents with a key of its own")
    return ",".join(parsed)


def load_settings(argv: list[str] | None = None, env: dict[str, str] | None = None) -> AgentSettings:
    """The flags in `argv`, then `env` (default: the process's environment). Raises
    `SettingsError`; a malformed command line exits with argparse's usage error (status 2)."""
    given = {k: v for k, v in vars(_parser().parse_args(argv)).items() if v is not None}
    options = AgentOptions.load(env if env is not None else dict(os.environ),
                                flags={k: flag_of(k) for k in given}, **given)
    simulation = _simulation(options)
    device_id = options.device_id or (simulation.prefix if simulation else "")
    if not device_id:
        raise SettingsError("no device id: pass --device-id or set SDV_DEVICE_ID")
    if not _token_ok(device_id):
        raise SettingsError(f"device id {device_id!r} must be letters, digits, '-' or '_' (a subject token)")
    # Enrolled over enrolment credentials, the agent learns the keys from what the registry
    # issues it (sdv_events.auth.suite_keys); keys given here override them.
    learns = bool(options.enrol) and options.enrol_creds is not None
    key = _key(options.packager_key, options.packager_key_file)
    if not key and not learns:
        raise SettingsError("no packager public key: pass --packager-key(-file) or set "
                            "SDV_AGENT_PACKAGER_KEY, or enrol (--enrol --enrol-creds) with a registry "
                            "that hands it out; without it no package can be verified")
    orchestrator_key = _orchestrator_key(options, packager_key=key, learns=learns)
    if options.nats_ca is not None:
        try:
            pinned_context(options.nats_ca)
        except NatsCaError as err:
            raise SettingsError(str(err)) from None
    # SDV_DATA_DIR: the suite-wide service data directory (the container images mount it).
    shared = options.suite_data_dir / "agent" if options.suite_data_dir else None
    data_dir = options.data_dir or shared or Path.home() / ".sdv-agent" / device_id
    return AgentSettings(
        device_id=device_id, nats_url=options.nats_url, data_dir=data_dir,
        packager_public_key=key, orchestrator_public_key=orchestrator_key,
        nats_creds=options.nats_creds, nats_ca=options.nats_ca, databroker=options.databroker,
        mqtt=options.mqtt,
        heartbeat_s=options.heartbeat_s, monitor_s=options.monitor_s,
        stop_timeout_s=options.stop_timeout_s, restart_base_s=options.restart_base_s,
        restart_max_s=options.restart_max_s, crash_loop=options.crash_loop,
        crash_window_s=options.crash_window_s, log_level=options.log_level, enrol=options.enrol,
        enrol_creds=options.enrol_creds, fleet_token=options.fleet_token,
        hardware_type=options.hardware_type, app_python=options.app_python, simulation=simulation,
        docker_host=options.docker_host, docker_base_image=options.docker_base_image,
    )
