"""Enrolment: the agent introduces itself to the registry and gets its own NATS credentials.

The device makes its own user nkey (the seed never leaves `<data_dir>/device.nk`, mode 0600) and
announces on `sdv.announce.<device_id>` — over the shared enrolment user, whose only rights are to
announce and to hear replies under `_ENROL` — with its capabilities and public key, signed with
that key over the registry's nonce (`sdv_events.enrolment`: possession of the key is proved, and
replies are sealed to it). The reply (`sdv_events.schemas.devices.AnnounceReply`) says pending
(announce again after `retry_after_s`), rejected, or accepted with a user JWT for that key.
JWT + seed become `<data_dir>/device.creds`, which the agent's connection reads on every
(re)connect; renewal is another announce, signed by the same registered key, before the JWT
expires. A `rate_limited` refusal is waited out for the `retry_after_s` it names.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import nats
import nkeys
import psutil
import structlog

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_events import enrolment
from sdv_events.auth import ENROL_INBOX_PREFIX, format_creds, new_keypair, public_key
from sdv_events.auth.client_tls import tls_hint, tls_options
from sdv_events.auth.keys import Role, keypair_from_seed, seed_of
from sdv_events.bus.rpc import CommandError, RateLimited
from sdv_events.errors import DecodeError
from sdv_events.schemas.devices import AnnounceReply, Capabilities, Kuksa

log = structlog.get_logger("sdv.agent.enrol")
RENEW_AT = 0.8  # of a credential's lifetime


class EnrolmentRejected(Exception):
    pass


class EnrolmentThrottled(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


def capabilities(data_dir: Path, *, hardware_type: str, agent_version: str,
                 databroker: str | None, runtimes: list[str] | None = None,
                 python_version: str | None = None) -> Capabilities:
    disk = psutil.disk_usage(str(data_dir))
    return Capabilities(
        hardware_type=hardware_type, arch=platform.machine() or "unknown", runtimes=runtimes or ["native"],
        python_version=python_version or platform.python_version(), agent_version=agent_version,
        memory_mb=psutil.virtual_memory().total // (1024 * 1024), storage_mb=disk.free // (1024 * 1024),
        kuksa=Kuksa(present=databroker is not None, address=databroker),
    )


class Enrolment:
    def __init__(self, url: str, device_id: str, data_dir: Path, *, enrol_creds: Path | None,
                 token: str | None, capabilities: Callable[[], Capabilities], ca: Path | None = None) -> None:
        self.url = url
        self.device_id = device_id
        self.enrol_creds = enrol_creds
        self.ca = ca  # the fleet CA to pin (sdv_events.auth.client_tls)
        self.token = token
        self.capabilities = capabilities
        self.seed_path = data_dir / "device.nk"
        self.creds_path = data_dir / "device.creds"
        self.expires_at: datetime | None = None
        self.keypair = self._load_or_create_key()

    def _load_or_create_key(self) -> nkeys.KeyPair:
        if self.seed_path.exists():
            return keypair_from_seed(self.seed_path.read_text().strip())
        kp = new_keypair(Role.USER)
        fd = os.open(self.seed_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(seed_of(kp))
        return kp

    @property
    def public_key(self) -> str:
        return public_key(self.keypair)

    async def announce_once(self) -> AnnounceReply:
        nc = await nats.connect(
            servers=[self.url], name=f"sdv-agent-enrol-{self.device_id}", connect_timeout=3,
            allow_reconnect=False, inbox_prefix=ENROL_INBOX_PREFIX,
            user_credentials=str(self.enrol_creds) if self.enrol_creds else None,
            **tls_options(self.url, self.ca),
        )
        try:
            return await enrolment.announce(nc, self.keypair, self.device_id, self.capabilities(),
                                            token=self.token, timeout=5)
        except RateLimited as err:
            raise EnrolmentThrottled(float(err.details.get("retry_after_s", "5"))) from None
        except CommandError as err:
            raise EnrolmentRejected(f"{err.code}: {err.message}") from None
        except DecodeError as err:
            raise EnrolmentRejected(f"unreadable announce reply: {err}") from None
        finally:
            await nc.close()

    async def until_accepted(self) -> Path | None:
        """Announce until accepted; the creds file to connect with (None: the registry issues
        no credentials, connect as configured)."""
        delay = 1.0
        while True:
            try:
                reply = await self.announce_once()
            except EnrolmentThrottled as err:
                log.info("announce_rate_limited", retry_in_s=err.retry_after_s)
                await asyncio.sleep(min(max(err.retry_after_s, 0.1), 60.0))
                continue
            except EnrolmentRejected as err:
                log.error("announce_refused", reason=str(err))
                await asyncio.sleep(30)
                continue
            except Exception as exc:
                reraise_if_cancelling(exc)
                log.info("announce_failed", reason=f"{type(exc).__name__}: {exc}{tls_hint(exc, self.ca)}",
                         retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if reply.status == "accepted":
                log.info("enrolled", public_key=self.public_key,
                         expires_at=reply.credentials.expires_at if reply.credentials else None)
                if reply.credentials is None:
                    return None
                self._write_creds(reply.credentials.jwt)
                self.expires_at = reply.credentials.expires_at
                return self.creds_path
            wait = reply.retry_after_s or (60.0 if reply.status == "rejected" else 5.0)
            log.warning("enrolment_waiting", status=reply.status, message=reply.message, retry_in_s=wait)
            await asyncio.sleep(wait)

    def _write_creds(self, jwt: str) -> None:
        tmp = self.creds_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(format_creds(jwt, seed_of(self.keypair)))
        tmp.replace(self.creds_path)

    async def renew_forever(self) -> None:
        """Re-announce before the credential expires; the connection picks the new file up on
        its next (re)connect (the server drops it when the old JWT expires)."""
        while True:
            if self.expires_at is None:
                return
            lifetime = (self.expires_at - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(1.0, lifetime * (1 - RENEW_AT)) if lifetime > 0 else 1.0)
            started = time.monotonic()
            await self.until_accepted()
            log.info("credentials_renewed", took_s=round(time.monotonic() - started, 2))
