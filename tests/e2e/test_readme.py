"""Every command in README.md's shell blocks is run by a test, as written.

`README_COMMANDS` says which test runs each one; a command added to the README fails
`test_every_readme_command_is_run_by_a_test` until it is listed there. The quick start is run
by tests/e2e/test_first_run.py, verbatim, the way a new user follows it: the first command on a
fresh data dir with no SDV_* variables, then the second shell's block after `source <data-dir>/env`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_RUN = "tests/e2e/test_first_run.py::test_the_first_command_brings_three_devices_online_within_60s"
SECOND_SHELL = "tests/e2e/test_first_run.py::test_the_readme_commands_for_a_second_shell_work_on_the_running_suite"
CI = ".ci/run"  # the CI script runs it
COLLECT = "collect"  # a `./dev test …` selection: run below with --collect-only, must select tests

# Each README command → what runs it: a test (path::name), CI, or COLLECT. Commands joined by
# `&&` count one by one. The quick start's server command is SERVER; HERE runs the others of
# the quick start, in README order, against it.
SERVER = "./dev up --demo"
# The README's example of a scheduled rollout, as one command (its lines joined).
SCHEDULED = ("sdv rollout create speed-monitor 1.4.0 --selector env=prod "
             "--window 'Mon-Fri 22:00-05:00 Europe/Berlin' "
             "--label-window 'zone=us: Mon-Fri 22:00-05:00 America/New_York' "
             "--start-at 2030-06-01T22:00:00+02:00 --rate 60 --rate-growth 2 --max-in-flight 200 "
             "--gate 'Vehicle.Speed == 0' --gate 'Vehicle.Powertrain.TractionBattery.StateOfCharge.Current >= 30' "
             "--hold --activation-timeout 172800")
README_COMMANDS: dict[str, str] = {
    SERVER: FIRST_RUN,
    "./dev test": CI,
    "source /tmp/sdv-up-XXXX/env": SECOND_SHELL,
    "sdv demo": SECOND_SHELL,
    "sdv status": SECOND_SHELL,
    "sdv ping": SECOND_SHELL,
    "sdv package publish examples/apps/speed-monitor": SECOND_SHELL,
    "sdv package list --json": SECOND_SHELL,
    "sdv package promote speed-monitor 1.0.0 stable": SECOND_SHELL,
    "./dev test -k relay": COLLECT,
    "./dev test tests/unit": COLLECT,
    "uv run ruff check .": "tests/unit/test_static_checks.py::test_ruff_finds_nothing_in_the_repository",
    "uv run mypy": "tests/unit/test_static_checks.py::test_mypy_strict_passes_on_every_package",
    "uv run lint-imports": "tests/unit/test_architecture.py::test_the_import_contracts_hold",
    SCHEDULED: "tests/integration/orchestrator/test_scheduled_rollouts.py::"
               "test_the_readmes_scheduled_rollout_command_creates_a_rollout_waiting_for_its_start",
    "sdv rollout activate ROLLOUT_ID [--device DEVICE …]":
        "tests/e2e/test_gated_rollout_stand_in.py::"
        "test_stand_in_a_gated_rollout_switches_when_the_vehicle_stops_and_a_held_one_on_activate",
}
VARIABLES = ("SDV_NATS_URL", "SDV_NATS_CREDS", "SDV_NATS_CA")


def readme_commands(text: str) -> list[str]:
    """The commands of the fenced bash/sh/shell blocks, comments dropped, `&&` chains split, a
    command continued with `\\` at the end of its lines joined into one."""
    commands: list[str] = []
    for block in re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, re.M | re.S):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


def test_every_readme_command_is_run_by_a_test() -> None:
    commands = readme_commands((ROOT / "README.md").read_text())
    assert commands, "no shell block found in README.md"
    assert [c for c in commands if c not in README_COMMANDS] == [], "list them in README_COMMANDS"
    assert [c for c in README_COMMANDS if c not in commands] == [], "gone from the README: drop them"
    for command, runner in README_COMMANDS.items():
        if runner == CI:
            assert command in (ROOT / CI).read_text().splitlines(), f"{CI} does not run {command}"
        elif runner != COLLECT:
            path, name = runner.split("::")
            assert re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.M), runner


@pytest.mark.parametrize("command", [c for c, r in README_COMMANDS.items() if r == COLLECT])
def test_a_readme_test_selection_selects_tests(command: str) -> None:
    done = subprocess.run(f"{command} --collect-only -q -p no:cacheprovider", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=fresh_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    collected = re.search(r"^(\d+)(?:/\d+)? tests? collected", done.stdout, re.M)
    assert collected is not None, done.stdout[-2000:]
    assert int(collected.group(1)) > 0


def fresh_env() -> dict[str, str]:
    """A new user's shell: none of the suite's variables (so `./dev …` starts its own servers)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SDV_", "PYTEST_"))}


def test_the_readme_parser_reads_blocks_comments_and_chains() -> None:
    text = "intro\n```bash\n./dev up      # start\n\n# a comment line\nuv run a && uv run b\n```\n" \
           "```python\nprint('not shell')\n```\n```sh\n./dev sdv ping\n```\n"
    assert readme_commands(text) == ["./dev up", "uv run a", "uv run b", "./dev sdv ping"]
