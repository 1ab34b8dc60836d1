"""What every `sdv` sub-command shares: connecting to NATS with the suite's credentials and CA,
turning typed command errors into exit codes, and `--json` output.

Exit codes: 0 done; 1 the service refused (invalid, conflict, not found, rejected, …); 2 usage
error; 3 NATS or the service cannot be reached (or did not answer in time).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import msgspec
import nats
import nats.errors
import typer
from nats.aio.client import Client as NatsClient
from rich.console import Console

from sdv_client.health import nats_ca, nats_credentials
from sdv_events.auth.client_tls import NatsCaError, tls_hint, tls_options
from sdv_events.bus import CommandError, RequestTimeout, ServiceUnavailable
from sdv_events.bus.tracing import configure_tracing, span

T = TypeVar("T")

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
CONNECT_TIMEOUT_S = 5.0
# What a command may wait on its way out for an OTLP collector that does not answer.
EXPORT_TIMEOUT_S = 2.0

out = Console()
err = Console(stderr=True)
JsonOption = typer.Option(False, "--json", help="Print one machine-readable JSON object on stdout.")


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


def failure_of(exc: CommandError, service: str) -> Failure:
    unreachable = isinstance(exc, ServiceUnavailable | RequestTimeout)
    message = exc.message
    if isinstance(exc, ServiceUnavailable):
        message += f" (is the {service} running on {nats_url()}?)"
    return Failure(message, code=exc.code, details=exc.details,
                   exit_code=EXIT_UNREACHABLE if unreachable else EXIT_REFUSED)


async def with_nats(work: Callable[[NatsClient], Awaitable[T]], service: str) -> T:
    url, ca = nats_url(), nats_ca()
    try:
        tls = tls_options(url, ca)
    except NatsCaError as exc:
        raise Failure(str(exc), code="bad_ca", exit_code=2) from None

    async def quiet(_: Exception) -> None:  # the failure is reported below, once
        return None

    try:
        # max_reconnect_attempts=0 would make nats-py retry the first connect forever.
        nc: NatsClient = await asyncio.wait_for(nats.connect(
            url, name=f"sdv-cli-{service}", connect_timeout=2, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=0.1, error_cb=quiet,
            user_credentials=nats_credentials(), **tls,
        ), CONNECT_TIMEOUT_S)
    except Exception as exc:
        raise Failure(f"cannot reach NATS at {url}: {exc!r}{tls_hint(exc, ca)}", code="unreachable",
                      exit_code=EXIT_UNREACHABLE) from None
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
