"""The first ten minutes (issue 13): the README's first command, run as a newcomer runs it, in a
subprocess on a fresh data dir, with nothing running before — real NATS, PostgreSQL, services
and three real edge agents, no Docker.

One suite for the module (it takes a while to start): the tests below run in order against it
and the last one stops it with SIGINT, as Ctrl-C in a terminal does. On the way they kill its
NATS and its PostgreSQL and restart a PostgreSQL by hand: each is brought back (or adopted),
the restart backoff starts over after a stable period (`SDV_UP_STABLE_S`, shortened here), and
in the end no process of the suite is left — servers, services, agents, the apps the agents
started, and the hand-restarted PostgreSQL — checked by pid.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).parents[2]
SDV = Path(sys.executable).parent / "sdv"
STABLE_S = 6.0  # the suite's stable period here: a child up this long is restarted at once again


def first_command() -> str:
    """The first command of the README's Quick start."""
    quick = REPO.joinpath("README.md").read_text().split("## Quick start", 1)[1]
    block = quick.split("```bash\n", 1)[1].split("```", 1)[0]
    return block.splitlines()[0].split("#", 1)[0].strip()


def fresh_env(**extra: str) -> dict[str, str]:
    """A newcomer's environment: no servers named, a wide terminal (lines are not wrapped)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SDV_NATS_URL", "SDV_DATABASE_URL", "SDV_NATS_CREDS", "SDV_NATS_CA")}
    return {**env, "COLUMNS": "250", **extra}


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


@dataclass
class FirstRun:
    process: subprocess.Popen[bytes]
    data_dir: Path
    out: Path
    err: Path
    started: float
    seen_pids: set[int] = field(default_factory=set)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def info(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.data_dir / "suite.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def alive(self) -> None:
        assert self.process.poll() is None, f"sdv up exited {self.process.returncode}:\n{self.stderr()[-3000:]}"

    def pids(self) -> set[int]:
        """Every process of the suite now: the command's tree, and whatever runs from the data
        dir (the apps are in sessions of their own; a hand-restarted PostgreSQL is nobody's child)."""
        found = set()
        with_children = [psutil.Process(self.process.pid)]
        for proc in with_children:
            try:
                found.add(proc.pid)
                found |= {p.pid for p in proc.children(recursive=True)}
            except psutil.NoSuchProcess:
                continue
        marker = str(self.data_dir)
        for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
            try:
                if marker in " ".join(proc.info["cmdline"] or []) or (proc.info["cwd"] or "").startswith(marker):
                    found.add(proc.pid)
            except psutil.Error:
                continue
        self.seen_pids |= found
        return found

    def by_cmdline(self, *words: str) -> list[psutil.Process]:
        found = []
        for pid in self.pids():
            try:
                proc = psutil.Process(pid)
                cmdline = " ".join(proc.cmdline())
                if all(w in cmdline for w in words) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def sdv(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        info = self.info()
        assert info is not None
        env = fresh_env(SDV_NATS_URL=info["nats_url"], SDV_NATS_CREDS=info["nats_creds"],
                        SDV_NATS_CA=info["nats_ca"])
        return subprocess.run([str(SDV), *args], env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def all_services_answer(self) -> bool:
        return self.sdv("ping", "--json").returncode == 0


def scratch_dir(prefix: str) -> Path:
    """A directory the agents' sandboxed app users can reach: not under pytest's base temp
    directory, which pytest keeps (and other sessions set back to) owner-only."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o711)
    return root


@pytest.fixture(scope="module")
def first_run() -> Iterator[FirstRun]:
    root = scratch_dir("sdv-first-run-")
    data_dir = root / "data"
    command = first_command()
    assert command.startswith("./dev up"), command
    out, err = root / "stdout.txt", root / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen([*shlex.split(command), "--data-dir", str(data_dir)], cwd=REPO,
                                   env=fresh_env(SDV_UP_STABLE_S=str(STABLE_S)), stdout=stdout, stderr=stderr,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    run = FirstRun(process, data_dir, out, err, time.monotonic())
    try:
        yield run
    finally:
        if process.poll() is None:  # a test failed before the last one stopped it
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for pid in run.seen_pids:  # nothing, unless a test failed
            try:
                psutil.Process(pid).kill()
                print(f"killed, left behind: {pid}")
            except psutil.Error:
                pass
        shutil.rmtree(root, ignore_errors=True)


def test_the_first_command_brings_three_devices_online_within_60s(first_run: FirstRun) -> None:
    def up() -> dict[str, Any] | None:
        first_run.alive()
        return first_run.info()

    info = until(up, 60 - (time.monotonic() - first_run.started), "sdv up to say it is up")
    assert info["devices"] == ["car-1", "car-2", "car-3"]

    def three_online() -> bool:
        status = httpx.get(f"{info['monitor_url']}/api/status", timeout=5).json()
        return bool(status["online"] == 3)

    until(three_online, max(1.0, 60 - (time.monotonic() - first_run.started)), "3 devices online in the monitor")
    out = first_run.stdout()
    assert "SDV Fleet is up" in out
    assert f"dashboard  {info['monitor_url']}/" in out
    assert f"source {first_run.data_dir / 'env'}" in out
    env_file = (first_run.data_dir / "env").read_text()
    assert f"export SDV_NATS_URL={info['nats_url']}" in env_file
    # The CLI pointed at the suite the way the block says: `source <data-dir>/env`.
    listed = subprocess.run(["bash", "-c", f"source {first_run.data_dir / 'env'} && sdv devices list --json"],
                            env=fresh_env(), capture_output=True, text=True, timeout=30, check=False)
    assert listed.returncode == 0, listed.stderr
    devices = json.loads(listed.stdout)["devices"]
    assert {(d["device_id"], d["status"], d["labels"].get("fleet")) for d in devices} == {
        (f"car-{i}", "accepted", "local") for i in (1, 2, 3)}


def test_the_agents_were_given_no_signing_key_and_the_first_command_shows_a_rollout(first_run: FirstRun) -> None:
    agents = first_run.by_cmdline("sdv_edge_agent", str(first_run.data_dir))
    assert len(agents) == 3
    for agent in agents:
        assert "--packager-key" not in " ".join(agent.cmdline())
        assert "--orchestrator-key" not in " ".join(agent.cmdline())
        assert "--enrol-creds" in agent.cmdline()

    until(lambda: "demo done" in first_run.stdout() or "the demo failed" in first_run.stdout(), 150,
          "the demo to end")
    out = first_run.stdout()
    assert "demo done" in out, out[-4000:]
    assert "3 device(s) upgraded, 1 rolled back" in out
    assert re.search(r"car-\d │ hello from car-\d: hello-fleet 1\.0\.0 running", out), out
    # The apps the agents started run, as users of their own, from the agents' data dirs.
    apps = first_run.by_cmdline(str(first_run.data_dir / "agents"), "main.py")
    assert len(apps) == 3, [a.cmdline() for a in apps]


def test_the_readme_commands_for_a_second_shell_work_on_the_running_suite(first_run: FirstRun) -> None:
    """`source <data-dir>/env`, then `sdv demo` (again: new versions) and `sdv status`."""
    def in_second_shell(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", f"source {first_run.data_dir / 'env'} && {command}"],
                              env=fresh_env(), capture_output=True, text=True, timeout=timeout, check=False)

    demo = in_second_shell("sdv demo --json", 150)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-4000:]
    result = json.loads(demo.stdout.strip().splitlines()[-1])
    assert (result["ok"], result["devices"], result["upgraded"]) == (True, 3, 3), result
    assert result["rolled_back"] >= 1
    assert (result["version"], result["broken_version"]) == ("1.2.0", "1.3.0-broken")
    assert result["statuses"] == {"upgrade": "completed", "broken": "rolled_back"}
    status = in_second_shell("sdv status", 30)
    assert status.returncode == 0, status.stderr
    assert "car-1" in status.stdout or "3" in status.stdout
    # The rest of the README's second-shell block, as written.
    for command in ("sdv ping", "sdv package publish examples/apps/speed-monitor",
                    "sdv package list --json", "sdv package promote speed-monitor 1.0.0 stable"):
        done = subprocess.run(["bash", "-c", f"source {first_run.data_dir / 'env'} && {command}"],
                              env=fresh_env(), cwd=REPO, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])


def test_a_killed_nats_is_restarted_and_the_backoff_starts_over_after_a_stable_period(
    first_run: FirstRun,
) -> None:
    def nats_pid() -> int | None:
        found = first_run.by_cmdline("nats-server", str(first_run.data_dir))
        return found[0].pid if len(found) == 1 else None

    restarted = re.compile(r"NATS exited with code -9; restarted")
    waiting = re.compile(r"NATS exited with code -9; restarting in 1s")

    def said(pattern: re.Pattern[str], times: int) -> Callable[[], bool]:
        return lambda: len(pattern.findall(first_run.stderr())) == times

    first = until(nats_pid, 5, "NATS")
    os.kill(first, signal.SIGKILL)
    second = until(lambda: (p := nats_pid()) not in (None, first) and p, 15, "NATS restarted")
    until(said(restarted, 1), 10, "the restart said")

    # Dead again at once: this time it waits (1 s) before the restart.
    os.kill(second, signal.SIGKILL)
    third = until(lambda: (p := nats_pid()) not in (None, first, second) and p, 15, "NATS restarted again")
    until(said(restarted, 2), 10, "the second restart said")
    assert len(waiting.findall(first_run.stderr())) == 1

    # Up longer than the stable period: the next death is restarted at once again.
    time.sleep(STABLE_S + 1)
    os.kill(third, signal.SIGKILL)
    until(lambda: (p := nats_pid()) not in (None, first, second, third) and p, 15, "NATS restarted a third time")
    until(said(restarted, 3), 10, "the third restart said")
    assert len(waiting.findall(first_run.stderr())) == 1
    until(first_run.all_services_answer, 60, "every service answering again")
    first_run.alive()


def test_a_killed_postgresql_is_restarted(first_run: FirstRun) -> None:
    def postmaster() -> psutil.Process | None:
        pgdata = first_run.data_dir / "postgres" / "pgdata"
        try:
            pid = int((pgdata / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid)
        except (OSError, ValueError, psutil.Error):
            return None

    first = until(postmaster, 5, "PostgreSQL")
    first.kill()
    until(lambda: (p := postmaster()) is not None and p.pid != first.pid and p.is_running(), 30,
          "PostgreSQL restarted")
    until(lambda: "PostgreSQL exited with code -9; restarted" in first_run.stderr(), 30, "the restart said")
    until(first_run.all_services_answer, 90, "every service answering again")

    # Restarted by hand (`pg_ctl restart`): the new server is nobody's child of the suite, which
    # takes it on rather than starting a second one on the same data dir.
    current = until(postmaster, 5, "PostgreSQL")
    pg_ctl = Path(current.exe()).with_name("pg_ctl")
    user = current.username() if os.geteuid() == 0 else None
    done = subprocess.run([str(pg_ctl), "-D", str(first_run.data_dir / "postgres" / "pgdata"), "restart",
                           "-m", "fast", "-w", "-l", str(first_run.data_dir / "postgres" / "by-hand.log")],
                          user=user, capture_output=True, text=True, timeout=60, check=False)
    by_hand = postmaster()
    assert by_hand is not None
    if done.returncode == 0:  # else the suite's own restart got there first: nothing to adopt
        assert by_hand.ppid() != first_run.info()["pid"]  # type: ignore[index]
    first_run.pids()  # remembered: it must be gone too once the suite stops
    first_run.seen_pids.add(by_hand.pid)
    until(first_run.all_services_answer, 90, "every service answering after the restart by hand")
    first_run.alive()


def test_sigint_stops_every_process_it_started(first_run: FirstRun) -> None:
    before = first_run.pids()
    assert len(before) >= 3 + 3 + 4 + 2, before  # agents, apps, services, servers
    os.killpg(first_run.process.pid, signal.SIGINT)  # Ctrl-C in the terminal
    first_run.process.wait(60)
    time.sleep(0.5)
    left = {pid for pid in first_run.seen_pids if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}
    assert not left, [psutil.Process(p).cmdline() for p in left]
    assert not (first_run.data_dir / "suite.json").exists()
    assert not (first_run.data_dir / "env").exists()
