"""Composition root of the registry: settings → read model, device and operator auth
(credentials and revocations, when its trust file — `sdv_events.auth.DeviceAuthority`, the keys
it signs with and nothing more — is configured), command and announce/renew routers, the
inventory projection and heartbeat presence, on the shared service runtime."""

from __future__ import annotations

import asyncio
import hashlib
import time

import nats
from nats.aio.client import Client as NatsClient

from sdv_events.auth import DeviceAuthority, raw_creds
from sdv_events.auth.client_tls import tls_options
from sdv_events.auth.suite_keys import SuiteKeys
from sdv_events.desired_signing import parse_public_key
from sdv_events.processing import ConsumerRunner, HistorySource, OwnThenHistory, StoreSource
from sdv_events.service import ServiceRuntime, run_service
from sdv_events.settings import settings_or_exit
from sdv_registry.adapters.admission_log import AdmissionLog
from sdv_registry.adapters.announce import subscribe_announcements
from sdv_registry.adapters.commands import command_router
from sdv_registry.adapters.heartbeats import subscribe_heartbeats
from sdv_registry.adapters.operator_commands import operator_router
from sdv_registry.adapters.rate_limit import AnnounceLimiter
from sdv_registry.adapters.revocations import Revocations
from sdv_registry.application import Registry, sha256_hex
from sdv_registry.credentials import CredentialIssuer
from sdv_registry.heartbeats import PresenceMonitor, wall_clock
from sdv_registry.operators import Operators, revoked_operator_keys
from sdv_registry.projections import DeviceInventory
from sdv_registry.settings import SERVICE, RegistrySettings, load_settings


async def _device_auth(settings: RegistrySettings, runtime: ServiceRuntime, admission: AdmissionLog
                       ) -> tuple[DeviceAuthority | None, CredentialIssuer | None, Revocations | None]:
    if settings.trust_file is None:
        return None, None, None
    authority = DeviceAuthority.load(settings.trust_file)
    keys = SuiteKeys(tuple(settings.packager_keys), tuple(settings.orchestrator_keys))
    for key in (*keys.packager, *keys.orchestrator):
        try:  # a bad key stops the registry here, rather than every agent later
            parse_public_key(key)
        except ValueError as err:
            raise ValueError(f"SDV_REGISTRY_PACKAGER_KEYS / SDV_REGISTRY_ORCHESTRATOR_KEYS: {key[:60]!r} "
                             f"is not a base64 Ed25519 public key ({err})") from None
    issuer = CredentialIssuer(authority, settings.credential_ttl_s, wall_clock,
                              signing_keys=keys if keys.packager or keys.orchestrator else None)

    async def reconnected() -> None:  # perhaps to a restarted server that forgot the revocations
        revocations.push_soon()

    # Claim updates are accepted only from the system account: a connection of its own.
    system_nc = await nats.connect(settings.nats_url, name=f"sdv-{SERVICE}-system",
                                   user_credentials=raw_creds(authority.system_creds()),
                                   max_reconnect_attempts=-1, reconnected_cb=reconnected,
                                   **tls_options(settings.nats_url, settings.nats_ca))
    revocations = Revocations(authority, system_nc, admission, credential_ttl_s=settings.credential_ttl_s,
                              clock=wall_clock, period_s=settings.revocation_push_s,
                              operator_keys=lambda: revoked_operator_keys(runtime.store))
    runtime.spawn(revocations.run, "revocations")
    runtime.spawn(lambda stop: _close_on_stop(system_nc, stop), "system_connection")
    return authority, issuer, revocations


async def _close_on_stop(nc: NatsClient, stop: asyncio.Event) -> None:
    await stop.wait()
    await nc.close()


async def serve(settings: RegistrySettings, stop: asyncio.Event | None = None) -> None:
    async def on_start(runtime: ServiceRuntime) -> None:
        schema = settings.schema_name
        inventory = DeviceInventory(schema)
        async with runtime.store.pool.acquire() as conn:
            await inventory.create(conn)
        admission = AdmissionLog(runtime.store.pool, schema)
        authority, issuer, revocations = await _device_auth(settings, runtime, admission)
        fleet_hash = sha256_hex(settings.fleet_token) if settings.fleet_token else None
        registry = Registry(runtime.store, inventory.view, issuer, revocations, fleet_hash,
                            settings.pending_retry_s)
        if issuer is not None:  # replicas share the trust file, so they accept each other's nonces
            registry.nonce_secret = hashlib.sha256(
                b"sdv-announce-nonce\n" + bytes(issuer.authority.devices_signing.seed)).digest()
        runtime.broker.include_router(command_router(registry))
        runtime.broker.include_router(operator_router(Operators(runtime.store, authority, revocations)))
        nc = runtime.broker.config.connection_state.connection
        runner = ConsumerRunner(runtime.store.pool, schema, runtime.js, inventory,
                                source=OwnThenHistory(StoreSource(runtime.store), HistorySource(nc)),
                                build_from=runtime.store, service=SERVICE, nc=nc)
        runtime.run_consumer(runner)

        monitor = PresenceMonitor(registry.run, silence_s=settings.heartbeat_silence_s,
                                  monotonic=time.monotonic, clock=wall_clock)
        monitor.restore(await admission.online_devices())
        registry.presence = monitor
        limiter = AnnounceLimiter(settings.announce_per_device_rate, settings.announce_per_device_burst,
                                  settings.announce_global_rate, settings.announce_global_burst)
        await subscribe_announcements(nc, registry, limiter)
        await subscribe_heartbeats(nc, monitor)
        runtime.spawn(monitor.run, "presence")

    await run_service(SERVICE, settings, on_start=on_start, stop=stop)


def main() -> None:
    asyncio.run(serve(settings_or_exit(f"python -m sdv_{SERVICE}", load_settings)))
