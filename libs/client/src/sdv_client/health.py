"""Is each service answering? `sdv.cmd.<service>.ping` for every service of the suite, at once;
and where `sdv up` keeps the NATS credentials and CA that asking needs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

import msgspec
from nats.aio.client import Client as NatsClient

from sdv_events.auth.certificates import CA_FILE
from sdv_events.auth.client_tls import ca_from_env
from sdv_events.bus import CommandClient, CommandError
from sdv_events.service import Ping, ServiceHealth

# The cloud services `sdv up` runs and pings. The edge agent is not one of them: it runs on a
# device, under that device's own identity (`sdv-agent --enrol`), and answers no ping.
SERVICES: tuple[str, ...] = ("packager", "registry", "orchestrator", "monitor")

# Where `sdv up` keeps the embedded NATS's chain of trust and credentials: `<data-dir>/nats/…`.
CREDS_ENV = "SDV_NATS_CREDS"
# The CLI's own choice of credentials (`sdv --creds FILE …` sets it): an operator's `.creds`
# from `sdv operators add`, over SDV_NATS_CREDS (which `sdv up`'s env file sets to its admin's).
OPERATOR_CREDS_ENV = "SDV_CREDS"
TRUST_FILE = "trust.json"
# The bootstrap admin's credentials (CLI, `sdv ping`, `sdv up` itself: an operator with role
# admin, `sdv_events.auth.roles`); each service has its own in SERVICES_CREDS_DIR.
SERVICE_CREDS_FILE = "operator.creds"
SERVICES_CREDS_DIR = "services"
ENROL_CREDS_FILE = "enrol.creds"
TLS_DIR = "tls"  # the CA, and the server certificate it signed (sdv_events.auth.certificates)


def service_creds_path(data_dir: Path) -> Path:
    return data_dir / "nats" / SERVICE_CREDS_FILE


def nats_credentials(data_dir: Path | None = None) -> str | None:
    """The `.creds` file to connect with: the admin's credentials `sdv up --data-dir <data_dir>`
    wrote when a data dir is named, else `SDV_CREDS` (`--creds`), else `SDV_NATS_CREDS`, else
    None (a server without auth)."""
    if data_dir is not None:
        return str(service_creds_path(data_dir))
    return os.environ.get(OPERATOR_CREDS_ENV) or os.environ.get(CREDS_ENV) or None


def tls_dir(data_dir: Path) -> Path:
    return data_dir / "nats" / TLS_DIR


def nats_ca(data_dir: Path | None = None) -> str | None:
    """The CA to pin: the one `sdv up --data-dir <data_dir>` made when a data dir is named, else
    `SDV_NATS_CA`, else None (a server without TLS, or one the system's authorities vouch for)."""
    if data_dir is not None:
        return str(tls_dir(data_dir) / CA_FILE)
    return ca_from_env()

# up: answers ping, every task healthy · unhealthy: answers, but a task failed, restarts or is
# stuck (a lagging relay, a consumer stopped at an event it cannot read) · starting: its process
# runs but it does not answer yet · unresponsive: it answered before and stopped answering ·
# down: no process (supervised) or nobody answers.
State = Literal["up", "unhealthy", "starting", "unresponsive", "down"]


_SHORT = {"unavailable": "no subscriber", "timeout": "no reply in time"}


class ServiceStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    service: str
    state: State
    version: str | None = None
    uptime_s: float | None = None
    relay_published: int | None = None
    pid: int | None = None
    detail: str | None = None


async def quiet(_: Exception) -> None:
    """nats-py's error callback; its default logs a traceback per failed (re)connect. A NATS that
    is unreachable shows up as services not answering, or as the error `nats.connect` raises."""


async def ping(nc: NatsClient, service: str, *, timeout: float = 1.0) -> ServiceHealth | CommandError:
    """The service's health, or the typed error explaining why it did not answer."""
    try:
        return await CommandClient(nc, actor="sdv-cli", timeout=timeout).call(
            service, "ping", Ping(), ServiceHealth
        )
    except CommandError as err:
        return err


async def ping_all(
    nc: NatsClient, services: tuple[str, ...] = SERVICES, *, timeout: float = 1.0
) -> dict[str, ServiceHealth | CommandError]:
    answers = await asyncio.gather(*(ping(nc, name, timeout=timeout) for name in services))
    return dict(zip(services, answers, strict=True))


def status_of(service: str, answer: ServiceHealth | CommandError, *, pid: int | None = None,
              not_answering: State = "down") -> ServiceStatus:
    if isinstance(answer, ServiceHealth):
        state: State = "up" if answer.healthy else "unhealthy"
        return ServiceStatus(service, state, answer.version, answer.uptime_s, answer.relay_published,
                             pid, "; ".join(answer.problems) or None)
    detail = _SHORT.get(answer.code) or f"{answer.code}: {answer.message}"
    return ServiceStatus(service, not_answering, pid=pid, detail=detail)
