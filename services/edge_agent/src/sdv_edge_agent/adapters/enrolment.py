"""Enrolment: the agent introduces itself to the registry and gets its own NATS credentials.

The device makes its own user nkey (the seed never leaves `<data_dir>/device.nk`, mode 0600) and
announces on `sdv.announce.<device_id>` — over the shared enrolment user, whose only rights are to
announce and to hear replies under `_ENROL` — with its capabilities and public key, signed with
that key over the registry's nonce (`sdv_events.enrolment`: possession of the key is proved, and
replies are sealed to it). The reply (`sdv_events.schemas.devices.AnnounceReply`) says pending
(announce again after `retry_after_s`), rejected, or accepted with a user JWT for that key.
JWT + seed become `<data_dir>/device.creds`, which the agent's connection reads on every
(re)connect. A `rate_limited` refusal is waited out for the `retry_after_s` it names.

The shared enrolment user is for the first enrolment only. A restart connects with
`device.creds` while its JWT is valid, and renewal runs over the device's own connection
(`sdv.renew.<device_id>`, the same signed exchange, open to this device only): once soon after
a restart (the registry hears the current capabilities) and then before the JWT expires. Only
when the server refuses the credentials (the JWT expired while the vehicle was offline, it was
revoked, or the chain of trust was made anew) does the agent announce again.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import nats
import nkeys
import psutil
import structlog
from nats.aio.client import Client as NatsClient

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_edge_agent.adapters.link import NatsLink
from sdv_edge_agent.domain.platforms import machine_arch
from sdv_events import enrolment
from sdv_events.auth import ENROL_INBOX_PREFIX, InvalidJwt, decode_jwt, format_creds, new_keypair, public_key
from sdv_events.auth.client_tls import tls_hint, tls_options
from sdv_events.auth.creds import jwt_of_creds
from sdv_events.auth.keys import Role, keypair_from_seed, seed_of
from sdv_events.bus.rpc import CommandError, RateLimited
from sdv_events.errors import DecodeError
from sdv_events.schemas.devices import AnnounceReply, Capabilities, Kuksa, Mqtt, RuntimeKind

log = structlog.get_logger("sdv.agent.enrol")
_RUNTIME_KINDS: dict[str, RuntimeKind] = {"docker": "docker", "native": "native"}
RENEW_AT = 0.8  # renew after (1 - RENEW_AT) of the time a credential has left
MIN_LEFT_S = 120.0  # stored credentials closer to expiry than this are not worth connecting with
RENEW_SOON_S = 5.0  # the renewal after a restart with stored credentials


class EnrolmentRejected(Exception):
    pass


class EnrolmentThrottled(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


def capabilities(data_dir: Path, *, hardware_type: str, agent_version: str,
                 databroker: str | None, runtimes: Iterable[str] = (),
                 python_version: str | None = None, mqtt: str | None = None,
                 catalog: str | None = None, signals: int = 0) -> Capabilities:
    """What the device is: `arch` as wheels are tagged (aarch64, x86_64), the apps' Python, the
    databroker and the signal catalogue it serves (by digest), the MQTT broker. Of its runtimes,
    the kinds the registry knows (a stand-in runtime of a test is none of them); none known is
    announced as native."""
    disk = psutil.disk_usage(str(data_dir))
    kinds = sorted({_RUNTIME_KINDS[name] for name in runtimes if name in _RUNTIME_KINDS})
    return Capabilities(
        hardware_type=hardware_type, arch=machine_arch(platform.machine() or "unknown"),
        runtimes=kinds or ["native"],
        python_version=python_version or platform.python_version(), agent_version=agent_version,
        memory_mb=psutil.virtual_memory().total // (1024 * 1024), storage_mb=disk.free // (1024 * 1024),
        kuksa=Kuksa(present=databroker is not None, address=databroker,
                    catalog=catalog if databroker is not None else None,
                    signals=signals if databroker is not None else 0),
        mqtt=Mqtt(present=mqtt is not None, address=mqtt),
    )


class Enrolment:
    def __init__(self, url: str, device_id: str, data_dir: Path, *, enrol_creds: Path | None,
                 token: str | None, capabilities: Callable[[], Capabilities], ca: Path | None = None,
                 on_credentials: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.device_id = device_id
        self.enrol_creds = enrol_creds
        self.ca = ca  # the fleet CA to pin (sdv_events.auth.client_tls)
        self.token = token
        self.capabilities = capabilities
        # Told every JWT this agent gets to connect with (stored or issued): the signing keys
        # it is to trust ride in it (signing_keys.py).
        self.on_credentials = on_credentials
        self.seed_path = data_dir / "device.nk"
        self.creds_path = data_dir / "device.creds"
        self.expires_at: datetime | None = None
        self._renew_soon = False
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
            return await _typed(enrolment.announce(nc, self.keypair, self.device_id, self.capabilities(),
                                                   token=self.token, timeout=5))
        finally:
            await nc.close()

    async def renew_once(self, nc: NatsClient) -> AnnounceReply:
        """The renewal exchange over the device's own connection `nc`."""
        return await _typed(enrolment.renew(nc, self.keypair, self.device_id, self.capabilities(),
                                            timeout=5))

    def stored_credentials(self) -> Path | None:
        """`device.creds` when it holds a JWT for this device's key valid for a while longer:
        a restart connects with it and needs no enrolment."""
        try:
            jwt = jwt_of_creds(self.creds_path.read_text())
            claims = decode_jwt(jwt, verify=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, InvalidJwt) as exc:
            log.warning("stored_credentials_unreadable", path=str(self.creds_path), reason=str(exc))
            return None
        expires = claims.get("exp")
        if claims.get("sub") != self.public_key or not isinstance(expires, int):
            return None
        if expires - time.time() < MIN_LEFT_S:
            return None
        self.expires_at = datetime.fromtimestamp(expires, UTC)
        self._renew_soon = True
        if self.on_credentials is not None:
            self.on_credentials(jwt)
        return self.creds_path

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
                    self.expires_at = None
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
        if self.on_credentials is not None:
            self.on_credentials(jwt)

    async def keep_renewed(self, link: NatsLink) -> None:
        """Renew over `link` before the credential expires (the connection reads the new file on
        its next connect; the server ends it when the old JWT expires); announce again only when
        the server refuses the credentials."""
        retry_in: float | None = None
        while self.expires_at is not None:
            wait = retry_in if retry_in is not None else self._until_renewal()
            if await _set_within(link.refused, wait):
                log.warning("credentials_refused", action="announcing again over the enrolment user")
                link.refused.clear()
                await self.until_accepted()
                retry_in = None
                continue
            retry_in = await self._try_renewal(link)

    def _until_renewal(self) -> float:
        if self._renew_soon:
            self._renew_soon = False
            return RENEW_SOON_S
        assert self.expires_at is not None
        left = (self.expires_at - datetime.now(UTC)).total_seconds()
        return max(1.0, left * (1 - RENEW_AT)) if left > 0 else 1.0

    async def _try_renewal(self, link: NatsLink) -> float | None:
        """None when renewed (or nothing left to renew); else seconds until the next try."""
        if link.nc is None or not link.is_up:
            return 1.0
        started = time.monotonic()
        try:
            reply = await self.renew_once(link.nc)
        except EnrolmentThrottled as err:
            log.info("renewal_rate_limited", retry_in_s=err.retry_after_s)
            return min(max(err.retry_after_s, 0.1), 60.0)
        except EnrolmentRejected as err:
            log.error("renewal_refused", reason=str(err))
            return 30.0
        except Exception as exc:
            reraise_if_cancelling(exc)
            log.info("renewal_failed", reason=f"{type(exc).__name__}: {exc}", retry_in_s=5.0)
            return 5.0
        if reply.status != "accepted":
            # The registry revokes this device's JWT too: the server will refuse it shortly.
            log.error("renewal_refused", status=reply.status, message=reply.message)
            return 60.0
        if reply.credentials is None:
            self.expires_at = None  # this registry issues no credentials: nothing to renew
            return None
        self._write_creds(reply.credentials.jwt)
        self.expires_at = reply.credentials.expires_at
        log.info("credentials_renewed", took_s=round(time.monotonic() - started, 2),
                 expires_at=self.expires_at)
        return None


async def _typed(exchange: Awaitable[AnnounceReply]) -> AnnounceReply:
    """The registry's error replies as the exceptions the loops act on."""
    try:
        return await exchange
    except RateLimited as err:
        raise EnrolmentThrottled(float(err.details.get("retry_after_s", "5"))) from None
    except CommandError as err:
        raise EnrolmentRejected(f"{err.code}: {err.message}") from None
    except DecodeError as err:
        raise EnrolmentRejected(f"unreadable announce reply: {err}") from None


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
