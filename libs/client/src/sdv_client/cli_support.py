"""What every `sdv` sub-command shares: connecting to NATS with the suite's credentials and CA,
turning typed command errors into exit codes, `--json` output (usage errors included) and
tables that keep ids whole.

Exit codes: 0 done; 1 the service refused (invalid, conflict, not found, rejected, …); 2 usage
error (a bad option, a missing credentials or CA file); 3 NATS or the service cannot be reached
(or did not answer in time).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import msgspec
import nats
import nats.errors
import typer
import typer.core
from nats.aio.client import Client as NatsClient
from rich.console import Console
from rich.table import Table

from sdv_client.health import nats_ca, nats_credentials
from sdv_events.auth.client_tls import NatsCaError, tls_hint, tls_options
from sdv_events.auth.roles import jetstream_prefix_of_file, operator_of_creds
from sdv_events.bus import CommandError, Forbidden, RequestTimeout, ServiceUnavailable
from sdv_events.bus.denials import PermissionDenials
from sdv_events.bus.tracing import configure_tracing, span

T = TypeVar("T")

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
CONNECT_TIMEOUT_S = 5.0
# What a command may wait on its way out for an OTLP collector that does not answer.
EXPORT_TIMEOUT_S = 2.0

# Piped output is read by programs (and people with `| less`): rich would otherwise squeeze
# tables into 80 columns and cut ids short with "…". A terminal keeps its own width.
WIDE = 4096


def _stdout_width() -> int | None:
    return None if os.environ.get("COLUMNS") or sys.stdout.isatty() else WIDE


out = Console(width=_stdout_width())
# Messages are never broken by rich (a path cut in two cannot be pasted); the terminal wraps them.
err = Console(stderr=True, soft_wrap=True)
JsonOption = typer.Option(False, "--json", help="Print one machine-readable JSON object on stdout.")
WideOption = typer.Option(False, "--wide", "-w", help="Never shorten or fold a column (always so "
                          "when stdout is not a terminal).")


def widen(wide: bool) -> bool:
    """`--wide`: print at full width; True when nothing may be shortened (wide, or piped)."""
    if wide:
        out.width = WIDE
    return wide or out.width >= WIDE


def id_column(table: Table, header: str) -> None:
    """A column of ids: folded onto more lines when the terminal is narrow, never cut short."""
    table.add_column(header, overflow="fold", no_wrap=False)


class JsonUsageErrors(typer.core.TyperGroup):
    """The `sdv` group: a usage error (unknown option, bad value, missing argument) of a command
    run with `--json` is one JSON object on stdout, `{"ok": false, "code": "usage_error", …}`,
    exit status 2 — what a script parses, instead of a rich box on stderr."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" not in argv:
            return super().main(argv, prog_name, complete_var, standalone_mode, windows_expand_args,
                                **extra)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except typer.TyperException as exc:  # typer's (vendored) click errors: usage and others
            code = getattr(exc, "exit_code", EXIT_USAGE)
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            doc: dict[str, Any] = {"ok": False, "error": message,
                                   "code": "usage_error" if code == EXIT_USAGE else "error"}
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                doc["usage"] = ctx.get_usage()
            emit_json(doc)
        except typer.Abort:
            emit_json({"ok": False, "error": "aborted", "code": "aborted"})
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


class Failure(Exception):
    """Ends a command: message, stable code, details, exit code."""

    def __init__(self, message: str, *, code: str, exit_code: int,
                 details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.exit_code = message, code, exit_code
        self.details = details or {}


def nats_url() -> str:
    return os.environ.get("SDV_NATS_URL") or DEFAULT_NATS_URL


def emit_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def fail(failure: Failure, as_json: bool) -> NoReturn:
    if as_json:
        emit_json({"ok": False, "error": failure.message, "code": failure.code,
                    "details": failure.details})
    else:
        if failure.details:
            err.print(f"[red]error ({failure.code}):[/] {len(failure.details)} problem(s)")
            for where, message in failure.details.items():
                err.print(f"  [bold]{where}[/]: {message}", highlight=False)
        else:
            err.print(f"[red]error ({failure.code}):[/] {failure.message}", highlight=False)
    raise typer.Exit(failure.exit_code)


def _creds_text() -> str | None:
    creds = nats_credentials()
    try:
        return Path(creds).read_text() if creds else None
    except OSError:
        return None


def js_prefix() -> str | None:
    """The JetStream API prefix for the credentials the CLI connects with (an operator's reach
    the suite's JetStream under one: `sdv_events.auth.roles.JS_API_PREFIX`)."""
    return jetstream_prefix_of_file(nats_credentials())


def who_am_i() -> str:
    """`operator 'ann' (viewer)` for an operator's credentials; else what they are."""
    creds = nats_credentials()
    operator = operator_of_creds(_creds_text())
    if operator is not None:
        return f"operator {operator[0]!r} ({operator[1]}, {creds})"
    return f"the credentials {creds}" if creds else "no credentials"


def failure_of(exc: CommandError, service: str) -> Failure:
    unreachable = isinstance(exc, ServiceUnavailable | RequestTimeout)
    message = exc.message
    if isinstance(exc, ServiceUnavailable):
        # The service asked may have answered that one of its peers did not (details "service").
        missing = exc.details.get("service") or service
        message += f" (is the {missing} running on {nats_url()}?)"
    if isinstance(exc, Forbidden) and exc.details.get("reason") == "permissions_violation":
        message = (f"refused by the NATS server: {who_am_i()} may not send "
                   f"{exc.details.get('subject', 'this request')} — the role does not allow it "
                   "(an admin can add an operator with a wider role: `sdv operators add`)")
    return Failure(message, code=exc.code, details=exc.details,
                   exit_code=EXIT_UNREACHABLE if unreachable else EXIT_REFUSED)


def readable_credentials(creds: str | None) -> str | None:
    """The `.creds` file, checked before connecting: nats-py's own error would not name it."""
    if creds is not None and not os.access(creds, os.R_OK):
        why = "no such file" if not os.path.exists(creds) else "not readable"
        raise Failure(f"NATS credentials file {creds}: {why} (--creds, SDV_CREDS, SDV_NATS_CREDS, "
                      "or the --data-dir of `sdv up`)", code="bad_creds", exit_code=EXIT_USAGE)
    return creds


async def with_nats(work: Callable[[NatsClient], Awaitable[T]], service: str) -> T:
    url, ca = nats_url(), nats_ca()
    creds = readable_credentials(nats_credentials())
    try:
        tls = tls_options(url, ca)
    except NatsCaError as exc:
        raise Failure(str(exc), code="bad_ca", exit_code=EXIT_USAGE) from None

    async def quiet(_: Exception) -> None:  # the failure is reported below, once
        return None

    # A command the credentials' role does not allow is refused by the server: say so at once.
    denials = PermissionDenials(then=quiet)
    try:
        # max_reconnect_attempts=0 would make nats-py retry the first connect forever.
        nc: NatsClient = await asyncio.wait_for(nats.connect(
            url, name=f"sdv-cli-{service}", connect_timeout=2, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=0.1, error_cb=denials.error_cb,
            user_credentials=creds, **tls,
        ), CONNECT_TIMEOUT_S)
    except Exception as exc:
        if "authorization violation" in str(exc).lower() and creds:
            raise Failure(f"the NATS server at {url} refused {who_am_i()} (authorization violation: "
                          "revoked, expired, or credentials of another suite)", code="unauthorized",
                          exit_code=EXIT_REFUSED) from None
        raise Failure(f"cannot reach NATS at {url}: {exc!r}{tls_hint(exc, ca)}", code="unreachable",
                      exit_code=EXIT_UNREACHABLE) from None
    denials.attach(nc)
    try:
        return await work(nc)
    except CommandError as exc:
        raise failure_of(exc, service) from None
    except nats.errors.Error as exc:
        raise Failure(f"NATS error talking to the {service} at {url}: {exc!r}", code="nats_error",
                      exit_code=EXIT_UNREACHABLE) from None
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def run(work: Callable[[NatsClient], Awaitable[T]], as_json: bool, service: str) -> T:
    """Run a sub-command's work in one span (`sdv rollout create` …): the root of the trace its
    requests carry to the services (exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set)."""
    configure_tracing("cli", export_timeout_s=EXPORT_TIMEOUT_S)
    try:
        with span(command_path()):
            return asyncio.run(with_nats(work, service))
    except Failure as failure:
        fail(failure, as_json)


def command_path(argv: list[str] | None = None) -> str:
    """`sdv policy set`: the program and its first two words that are not options (a group and
    its command; `sdv ping` has one)."""
    words = [a for a in (sys.argv if argv is None else argv)[1:] if not a.startswith("-")][:2]
    return " ".join(["sdv", *words])


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
