"""The `sdv` command line as a new user meets it: every command says what it does, a usage error
under `--json` is still JSON, bad choices and missing files are refused with their name — all
before anything is sent (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from sdv_client.cli import app

NO_SERVER = {"SDV_NATS_URL": "nats://127.0.0.1:1", "SDV_NATS_CREDS": "", "SDV_NATS_CA": ""}


def sdv(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env={**NO_SERVER, **env})


def commands(group: Any, path: tuple[str, ...] = ("sdv",)) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, group)]
    for name, sub in getattr(group, "commands", {}).items():
        found += commands(sub, (*path, name))
    return found


def test_every_command_and_every_option_has_help_text() -> None:
    every = commands(typer.main.get_command(app))
    assert len(every) > 40
    without = [" ".join(path) for path, command in every if not (command.help or "").strip()]
    options = [f"{' '.join(path)} {param.opts[0]}" for path, command in every for param in command.params
               if param.param_type_name == "option" and param.name != "help"
               and not (getattr(param, "help", None) or "").strip()]
    assert (without, options) == ([], [])


@pytest.mark.parametrize("args", [
    ["rollout", "lst", "--json"],  # no such command
    ["rollout", "list", "--limit", "many", "--json"],  # a bad value
    ["rollout", "create", "--json"],  # a missing argument
    ["devices", "list", "--bogus", "--json"],  # no such option
])
def test_a_usage_error_under_json_is_one_json_object_with_exit_status_2(args: list[str]) -> None:
    result = sdv(*args)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert (doc["ok"], doc["code"]) == (False, "usage_error")
    assert doc["error"]
    assert doc["usage"].startswith("Usage: ")


def test_rollout_list_refuses_a_status_that_does_not_exist() -> None:
    refused = sdv("rollout", "list", "--status", "bogus", "--json")
    assert refused.exit_code == 2
    error = json.loads(refused.stdout)["error"]
    assert "bogus" in error
    assert "rolled_back" in error  # the choices are named
    assert sdv("rollout", "list", "--status", "bogus").exit_code == 2
    # A real status passes the check and goes on to connect (nobody listens here: exit 3).
    assert sdv("rollout", "list", "--status", "rolled_back", "--json").exit_code == 3


def test_a_missing_credentials_file_is_named_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "operator.creds"
    result = sdv("rollout", "list", "--json", SDV_NATS_CREDS=str(missing))
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["code"] == "bad_creds"
    assert str(missing) in doc["error"]
    human = sdv("devices", "list", SDV_NATS_CREDS=str(missing))
    assert human.exit_code == 2
    assert str(missing) in human.stderr


@pytest.mark.parametrize(("args", "problem"), [
    (["devices", "accept", "--json"], "DEVICE_ID"),  # nothing to accept
    (["devices", "accept", "car-1", "--all-pending", "--json"], "one of them"),
    (["devices", "accept", "--selector", "env=prod", "--key", "abc", "--json"], "--key"),
    (["devices", "label", "--selector", "env=prod", "--json"], "key=value"),  # nothing to set
    (["devices", "label", "car-1", "ring", "--json"], "key=value"),  # not a label
    (["devices", "label", "ring=canary", "--json"], "DEVICE_ID"),  # no device, no selector
])
def test_bulk_device_commands_refuse_an_ambiguous_target(args: list[str], problem: str) -> None:
    result = sdv(*args)
    assert result.exit_code == 2
    assert problem in json.loads(result.stdout)["error"]
