"""Configuration of the edge agent: environment variables, overridable on the command line.

  SDV_DEVICE_ID                  this device's id (required)
  SDV_NATS_URL                   nats://127.0.0.1:4222
  SDV_AGENT_NATS_CREDS           a NATS .creds file (the device's user JWT + nkey seed), optional
  SDV_NATS_CA                    the fleet's CA certificate (PEM) to pin: the NATS server's
                                 certificate must be signed by it, no other CA is trusted
                                 (`sdv up`: <data-dir>/nats/tls/ca.pem); a tls:// URL starts TLS
                                 with its first byte
  SDV_AGENT_DATA_DIR             SQLite database, installed apps, console files
                                 (else $SDV_DATA_DIR/agent, else ~/.sdv-agent/<id>)
  SDV_AGENT_PACKAGER_KEY         the packager's Ed25519 public key, base64 (no package is
  SDV_AGENT_PACKAGER_KEY_FILE      installed unless its signature verifies); comma-separated,
                                 several (a rotation). Optional with --enrol and
                                 --enrol-creds: the agent then learns the keys from the
                                 credentials the registry issues it (see the README); given,
                                 it overrides them
  SDV_AGENT_ORCHESTRATOR_KEY     the orchestrator's Ed25519 public key(s), base64 (no desired
  SDV_AGENT_ORCHESTRATOR_KEY_FILE  document is acted on unless it verifies with one;
                                 `sdv.cmd.orchestrator.public_key` or the orchestrator's
                                 `<data-dir>/keys/orchestrator-ed25519.pub` give it); optional
                                 and an override as the packager's
  SDV_AGENT_DATABROKER           host:port of the KUKSA databroker (then 127.0.0.1:55555 is tried)
  SDV_AGENT_HEARTBEAT_S          5
  SDV_AGENT_MONITOR_S            1    (usage sampling of app processes, and the RSS watchdog)
  SDV_AGENT_STOP_TIMEOUT_S       10   (SIGTERM → SIGKILL)
  SDV_AGENT_RESTART_BASE_S       0.5  (crash restarts: base · 2^n, capped at RESTART_MAX_S)
  SDV_AGENT_RESTART_MAX_S        30
  SDV_AGENT_CRASH_LOOP           5    (crashes within CRASH_WINDOW_S = crash loop → FAILED)
  SDV_AGENT_CRASH_WINDOW_S       120
  SDV_AGENT_ENROL                1: announce to the registry and use the credentials it issues
  SDV_AGENT_ENROL_CREDS          the shared enrolment user's .creds file (operator-mode servers)
  SDV_AGENT_FLEET_TOKEN          a pre-authorisation or fleet token sent with the announce
  SDV_AGENT_HARDWARE_TYPE        linux-generic (reported in the capabilities)
  SDV_AGENT_APP_PYTHON           the interpreter app venvs are made from (default: the agent's own,
                                 or the system's of the same major.minor if sandboxed app users
                                 could not run the agent's)
  SDV_AGENT_DOCKER_HOST          the Docker engine for docker-mode apps, e.g. unix:///run/docker.sock
                                 (else $DOCKER_HOST; none: the device runs native apps only)
  SDV_AGENT_DOCKER_BASE_IMAGE    python:<agent's major.minor>-slim (must be in the engine: nothing
                                 is pulled; app images are built on it)

Simulation (scale tests of the control plane; see simulation.py): `--simulate N` or
SDV_AGENT_SIMULATE=N runs N SIMULATED agents in this process; then the device id is optional.
  --sim-prefix / SDV_AGENT_SIM_PREFIX              device ids <prefix>-0000…  (the device id, else "sim")
  --sim-failure-rate / SDV_AGENT_SIM_FAILURE_RATE  0..1, share of (device, app, version) that crash  (0)
  --sim-fail-versions / SDV_AGENT_SIM_FAIL_VERSIONS  versions it applies to, fnmatch, comma-separated (*)
  --sim-seed / SDV_AGENT_SIM_SEED                  picks which ones fail  (0)
  --sim-log-every-s / SDV_AGENT_SIM_LOG_EVERY_S    a console line per app every that many s  (0: banner only)
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sdv_events.auth.client_tls import CA_ENV, NatsCaError, pinned_context
from sdv_events.desired_signing import parse_public_key, public_key_b64

SERVICE = "edge_agent"


class SettingsError(ValueError):
    """The agent cannot start with this configuration; the message says what to set."""


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
    device_id: str
    nats_url: str
    data_dir: Path
    # Comma-separated base64 keys given on the command line or in the environment; "" when the
    # agent is to learn them from its credentials (adapters/signing_keys.py).
    packager_public_key: str
    orchestrator_public_key: str
    nats_creds: Path | None = None
    nats_ca: Path | None = None
    databroker: str | None = None
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
    docker_base_image: str = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdv-agent", description="SDV Fleet edge agent")
    p.add_argument("--device-id")
    p.add_argument("--nats-url")
    p.add_argument("--nats-creds", type=Path)
    p.add_argument("--nats-ca", type=Path, help="the fleet's CA certificate to pin (PEM)")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--packager-key", help="packager Ed25519 public key(s) (base64, comma-separated); "
                   "overrides the keys learned from the credentials")
    p.add_argument("--packager-key-file", type=Path)
    p.add_argument("--orchestrator-key", help="orchestrator Ed25519 public key(s) (base64, comma-"
                   "separated): desired documents are acted on only when signed with one; overrides "
                   "the keys learned from the credentials")
    p.add_argument("--orchestrator-key-file", type=Path)
    p.add_argument("--databroker", help="KUKSA databroker host:port")
    p.add_argument("--heartbeat-s", type=float)
    p.add_argument("--log-level")
    p.add_argument("--enrol", action="store_true", default=None,
                   help="announce to the registry and connect with the credentials it issues")
    p.add_argument("--enrol-creds", type=Path)
    p.add_argument("--fleet-token")
    p.add_argument("--app-python", help="interpreter for app venvs")
    sim = p.add_argument_group("simulation (scale tests: N simulated agents, no app processes)")
    sim.add_argument("--simulate", type=int, metavar="N")
    sim.add_argument("--sim-prefix")
    sim.add_argument("--sim-failure-rate", type=float)
    sim.add_argument("--sim-fail-versions")
    sim.add_argument("--sim-seed", type=int)
    sim.add_argument("--sim-log-every-s", type=float)
    p.add_argument("--docker-host", help="Docker engine for docker-mode apps (unix:///path/docker.sock)")
    return p


def _token_ok(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c in "-_" for c in text)


def _simulation(args: argparse.Namespace, env: dict[str, str]) -> SimulationSettings | None:
    agents = args.simulate if args.simulate is not None else int(env.get("SDV_AGENT_SIMULATE") or 0)
    if agents < 0:
        raise SettingsError(f"--simulate {agents}: the number of simulated agents cannot be negative")
    if agents == 0:
        return None
    prefix = (args.sim_prefix or env.get("SDV_AGENT_SIM_PREFIX") or args.device_id
              or env.get("SDV_DEVICE_ID") or "sim")
    if not _token_ok(prefix):
        raise SettingsError(f"simulation prefix {prefix!r} must be letters, digits, '-' or '_'")
    rate = (args.sim_failure_rate if args.sim_failure_rate is not None
            else float(env.get("SDV_AGENT_SIM_FAILURE_RATE") or 0.0))
    if not 0.0 <= rate <= 1.0:
        raise SettingsError(f"--sim-failure-rate {rate} must be between 0 and 1")
    versions = args.sim_fail_versions or env.get("SDV_AGENT_SIM_FAIL_VERSIONS") or "*"
    return SimulationSettings(
        agents=agents, prefix=prefix, failure_rate=rate,
        fail_versions=tuple(v.strip() for v in versions.split(",") if v.strip()),
        seed=args.sim_seed if args.sim_seed is not None else int(env.get("SDV_AGENT_SIM_SEED") or 0),
        log_every_s=(args.sim_log_every_s if args.sim_log_every_s is not None
                     else float(env.get("SDV_AGENT_SIM_LOG_EVERY_S") or 0.0)),
    )


def _key(given: str | None, file: Path | None, env: dict[str, str], name: str) -> str:
    """A base64 public key: the option, else `<name>`, else the file (option, else `<name>_FILE`)."""
    key = given or env.get(name, "")
    file = file or (Path(env[f"{name}_FILE"]) if env.get(f"{name}_FILE") else None)
    if not key and file is not None:
        try:
            key = file.read_text().strip()
        except OSError as err:
            raise SettingsError(f"cannot read the key file {file}: {err.strerror or err}") from None
    return key


def key_list(text: str) -> tuple[str, ...]:
    """The keys of a comma-separated list (one key is a list of one)."""
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _orchestrator_key(args: argparse.Namespace, env: dict[str, str], *, packager_key: str,
                      learns: bool) -> str:
    """Required, like the packager's, unless learned from the credentials (`learns`): there is
    no mode that acts on unsigned desired documents."""
    key = _key(args.orchestrator_key, args.orchestrator_key_file, env, "SDV_AGENT_ORCHESTRATOR_KEY")
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
    env = dict(os.environ if env is None else env)
    args = _parser().parse_args(argv)
    simulation = _simulation(args, env)
    device_id = args.device_id or env.get("SDV_DEVICE_ID", "") or (simulation.prefix if simulation else "")
    if not device_id:
        raise SettingsError("no device id: pass --device-id or set SDV_DEVICE_ID")
    if not _token_ok(device_id):
        raise SettingsError(f"device id {device_id!r} must be letters, digits, '-' or '_' (a subject token)")
    enrol = bool(args.enrol) or env.get("SDV_AGENT_ENROL", "") == "1"
    enrol_creds = args.enrol_creds or (Path(env["SDV_AGENT_ENROL_CREDS"]) if env.get("SDV_AGENT_ENROL_CREDS")
                                       else None)
    # Enrolled over enrolment credentials, the agent learns the keys from what the registry
    # issues it (sdv_events.auth.suite_keys); keys given here override them.
    learns = enrol and enrol_creds is not None
    key = _key(args.packager_key, args.packager_key_file, env, "SDV_AGENT_PACKAGER_KEY")
    if not key and not learns:
        raise SettingsError("no packager public key: pass --packager-key(-file) or set "
                            "SDV_AGENT_PACKAGER_KEY, or enrol (--enrol --enrol-creds) with a registry "
                            "that hands it out; without it no package can be verified")
    orchestrator_key = _orchestrator_key(args, env, packager_key=key, learns=learns)
    creds_env = env.get("SDV_AGENT_NATS_CREDS")
    creds = args.nats_creds or (Path(creds_env) if creds_env else None)
    ca = args.nats_ca or (Path(env[CA_ENV]) if env.get(CA_ENV) else None)
    if ca is not None:
        try:
            pinned_context(ca)
        except NatsCaError as err:
            raise SettingsError(str(err)) from None
    # SDV_DATA_DIR: the suite-wide service data directory (the container images mount it).
    shared = Path(env["SDV_DATA_DIR"]) / "agent" if env.get("SDV_DATA_DIR") else None
    data_dir = args.data_dir or Path(env.get("SDV_AGENT_DATA_DIR") or shared
                                     or Path.home() / ".sdv-agent" / device_id)

    def num(name: str, default: float) -> float:
        return float(env.get(name, default))

    return AgentSettings(
        device_id=device_id,
        nats_url=args.nats_url or env.get("SDV_NATS_URL", "nats://127.0.0.1:4222"),
        data_dir=data_dir, packager_public_key=key, orchestrator_public_key=orchestrator_key,
        nats_creds=creds, nats_ca=ca,
        databroker=args.databroker or env.get("SDV_AGENT_DATABROKER") or None,
        heartbeat_s=args.heartbeat_s or num("SDV_AGENT_HEARTBEAT_S", 5.0),
        monitor_s=num("SDV_AGENT_MONITOR_S", 1.0),
        stop_timeout_s=num("SDV_AGENT_STOP_TIMEOUT_S", 10.0),
        restart_base_s=num("SDV_AGENT_RESTART_BASE_S", 0.5),
        restart_max_s=num("SDV_AGENT_RESTART_MAX_S", 30.0),
        crash_loop=int(num("SDV_AGENT_CRASH_LOOP", 5)),
        crash_window_s=num("SDV_AGENT_CRASH_WINDOW_S", 120.0),
        log_level=args.log_level or env.get("SDV_LOG_LEVEL", "INFO"),
        enrol=enrol, enrol_creds=enrol_creds,
        fleet_token=args.fleet_token or env.get("SDV_AGENT_FLEET_TOKEN") or None,
        hardware_type=env.get("SDV_AGENT_HARDWARE_TYPE", "linux-generic"),
        app_python=args.app_python or env.get("SDV_AGENT_APP_PYTHON") or None,
        simulation=simulation,
        docker_host=args.docker_host or env.get("SDV_AGENT_DOCKER_HOST") or env.get("DOCKER_HOST") or None,
        docker_base_image=env.get("SDV_AGENT_DOCKER_BASE_IMAGE") or AgentSettings.docker_base_image,
    )
