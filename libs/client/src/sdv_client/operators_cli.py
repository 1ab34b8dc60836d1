"""`sdv operators add|list|revoke`: people's identities on the bus, each with a role.

`add` makes the new operator's key pair here, sends the registry only the public key, and writes
the JWT the registry signed with the seed as a `.creds` file (owner-only) — hand it to that
person, who uses it with `sdv --creds FILE …` or `SDV_CREDS`. The role (viewer, operator, admin:
`sdv_events.auth.roles`) is enforced by the NATS server, and every event the operator causes
records `operator:<name>` as its actor, from the credentials, not from anything the client says.
`add` and `revoke` need an admin's credentials (`sdv up` writes one: `<data-dir>/nats/operator.creds`).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from nats.aio.client import Client as NatsClient
from rich.table import Table

from sdv_client.cli_support import (
    EXIT_USAGE,
    Failure,
    JsonOption,
    builtins,
    emit_json,
    fail,
    out,
    run,
    user,
)
from sdv_events.auth import ROLES, Role, format_creds, new_keypair, public_key, seed_of
from sdv_events.bus import CommandClient
from sdv_events.schemas.operators import (
    AddOperator,
    ListOperators,
    OperatorCredentials,
    OperatorList,
    OperatorView,
    RevokeOperator,
)

SERVICE = "registry"
app = typer.Typer(help="Operators: who may do what (viewer, operator, admin), enforced by the NATS server.",
                  no_args_is_help=True)


def _client(nc: NatsClient) -> CommandClient:
    return CommandClient(nc, actor=f"cli:{user()}", timeout=10.0)


def _write_private(path: Path, text: str) -> None:
    """Created owner-only (never readable by others, not even for a moment); refuses to replace."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@app.command("add")
def add(name: str = typer.Argument(..., help="The operator's name: lowercase letters, digits, '-', '_'."),
        role: str = typer.Option(..., "--role", help="viewer | operator | admin"),
        out_file: Path = typer.Option(None, "--out", help="Where to write the credentials "
                                      "(default: ./<name>.creds; never overwritten)."),
        as_json: bool = JsonOption) -> None:
    """Add an operator with a role and write its credentials file."""
    if role not in ROLES:
        fail(Failure(f"--role must be one of {', '.join(ROLES)}, not {role!r}", code="usage_error",
                     exit_code=EXIT_USAGE), as_json)
    path = out_file or Path(f"{name}.creds")
    if path.exists():
        fail(Failure(f"{path} exists: give another --out (credentials are never overwritten)",
                     code="exists", exit_code=EXIT_USAGE), as_json)
    key = new_keypair(Role.USER)
    request = AddOperator(name=name, role=role, public_key=public_key(key))
    issued = run(lambda nc: _client(nc).call(SERVICE, "add_operator", request, OperatorCredentials),
                 as_json, SERVICE)
    try:
        _write_private(path, format_creds(issued.jwt, seed_of(key)))
    except OSError as exc:
        fail(Failure(f"operator {name!r} was added, but its credentials could not be written to "
                     f"{path}: {exc} (revoke it and add it again)", code="write_failed",
                     exit_code=1), as_json)
    if as_json:
        emit_json({"ok": True, "operator": builtins(issued.operator), "creds_file": str(path)})
        return
    out.print(f"added operator {name} ({issued.operator.role}); credentials in {path} — for them: "
              f"`sdv --creds {path} …` or `export SDV_CREDS={path}`", highlight=False)


@app.command("list")
def list_(include_revoked: bool = typer.Option(False, "--all", help="Revoked operators too."),
          as_json: bool = JsonOption) -> None:
    """Operators the registry added (not the suite's own `admin` of `sdv up` / `sdv deploy init`)."""
    found = run(lambda nc: _client(nc).call(SERVICE, "list_operators", ListOperators(include_revoked),
                                            OperatorList), as_json, SERVICE)
    if as_json:
        emit_json({"ok": True, "operators": builtins(found.operators)})
        return
    table = Table(title=f"{len(found.operators)} operator(s)")
    for column in ("name", "role", "status", "added", "by", "revoked"):
        table.add_column(column)
    for o in found.operators:
        table.add_row(o.name, o.role, o.status, o.added_at.astimezone().strftime("%Y-%m-%d %H:%M"),
                      o.added_by or "", o.revoked_at.astimezone().strftime("%Y-%m-%d %H:%M")
                      if o.revoked_at else "")
    out.print(table)


@app.command("revoke")
def revoke(name: str, reason: str = typer.Option("", help="Why (kept in the audit log)."),
           as_json: bool = JsonOption) -> None:
    """Revoke an operator: the NATS server closes its connections and refuses its credentials."""
    view = run(lambda nc: _client(nc).call(SERVICE, "revoke_operator", RevokeOperator(name, reason),
                                           OperatorView), as_json, SERVICE)
    if as_json:
        emit_json({"ok": True, "operator": builtins(view)})
        return
    out.print(f"revoked operator {view.name}: its credentials no longer connect", highlight=False)
