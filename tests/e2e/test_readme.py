"""Every command in README.md's shell blocks is run by a test, as written.

`README_COMMANDS` says which test runs each one; a command added to the README fails
`test_every_readme_command_is_run_by_a_test` until it is listed there. The quick start is run
here, verbatim, the way a new user follows it: `./dev up` in one shell (a fresh machine: no SDV_*
variables, embedded NATS and PostgreSQL), the variables it prints exported in another, then each
command of the block that follows, in order.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests/e2e/test_readme.py::test_the_readme_quick_start_works_as_written"
CI = ".ci/run"  # the CI script runs it
COLLECT = "collect"  # a `./dev test …` selection: run below with --collect-only, must select tests

# Each README command → what runs it: a test (path::name), CI, or COLLECT. Commands joined by
# `&&` count one by one. The quick start's server command is SERVER; HERE runs the others of
# the quick start, in README order, against it.
SERVER = "./dev up"
README_COMMANDS: dict[str, str] = {
    SERVER: HERE,
    "./dev test": CI,
    "./dev sdv ping": HERE,
    "./dev sdv package publish examples/apps/speed-monitor": HERE,
    "./dev sdv package list --json": HERE,
    "./dev sdv package promote speed-monitor 1.0.0 stable": HERE,
    "./dev test -k relay": COLLECT,
    "./dev test tests/unit": COLLECT,
    "uv run ruff check .": "tests/unit/test_static_checks.py::test_ruff_finds_nothing_in_the_repository",
    "uv run mypy": "tests/unit/test_static_checks.py::test_mypy_strict_passes_on_sdv_events",
    "uv run lint-imports": "tests/unit/test_architecture.py::test_the_import_contracts_hold",
}
VARIABLES = ("SDV_NATS_URL", "SDV_NATS_CREDS", "SDV_NATS_CA")


def readme_commands(text: str) -> list[str]:
    """The commands of the fenced bash/sh/shell blocks, comments dropped, `&&` chains split."""
    commands: list[str] = []
    for block in re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, re.M | re.S):
        for line in block.splitlines():
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
    """A new user's shell: none of the suite's variables (so `./dev up` starts its own servers)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SDV_", "PYTEST_"))}


@pytest.fixture
def suite_up() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """`./dev up` as written, in its own process group; what it printed to export."""
    server = subprocess.Popen(SERVER, shell=True, cwd=ROOT, env=fresh_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield server, wait_for_variables(server, timeout=120)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as the README says
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)


def wait_for_variables(server: subprocess.Popen[str], timeout: float) -> dict[str, str]:
    """Read the suite's output until it names SDV_NATS_URL (and the credentials and CA, when the
    server wants them): what the README tells the user to export."""
    assert server.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line:
            pytest.fail(f"`{SERVER}` ended before it said how to reach it:\n{seen[-3000:]}")
        seen += line
        found = {name: value.strip("`'\";") for name in VARIABLES
                 for value in re.findall(rf"\b{name}=(\S+)", seen)}
        if "SDV_NATS_URL" in found and ("tls://" not in found["SDV_NATS_URL"] or len(found) == 3):
            return found
    pytest.fail(f"`{SERVER}` did not print SDV_NATS_URL within {timeout:.0f}s:\n{seen[-3000:]}")


@pytest.mark.timeout(600)
def test_the_readme_quick_start_works_as_written(
    suite_up: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    server, variables = suite_up
    env = fresh_env() | variables
    quick_start = [c for c, r in README_COMMANDS.items() if r == HERE and c != SERVER]
    outputs: dict[str, str] = {}
    for command in quick_start:
        done = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0 and "cannot resolve wheels" in done.stdout + done.stderr:
            pytest.skip(f"no package index here for the example's wheels: {done.stderr[-300:]}")
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        outputs[command] = done.stdout
        assert server.poll() is None, f"`{SERVER}` stopped while `{command}` ran"
    listed = outputs.get("./dev sdv package list --json", "")
    assert '"speed-monitor"' in listed


def test_the_readme_parser_reads_blocks_comments_and_chains() -> None:
    text = "intro\n```bash\n./dev up      # start\n\n# a comment line\nuv run a && uv run b\n```\n" \
           "```python\nprint('not shell')\n```\n```sh\n./dev sdv ping\n```\n"
    assert readme_commands(text) == ["./dev up", "uv run a", "uv run b", "./dev sdv ping"]
