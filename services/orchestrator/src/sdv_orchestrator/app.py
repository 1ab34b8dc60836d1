"""Composition root of the orchestrator: its signing key, store, peers (packager and registry
over the bus), read models (rollout catalog, desired states → KV, signed), command routers,
agents' facts consumer and the ticker, on the shared service runtime."""

from __future__ import annotations

import asyncio

import structlog

from sdv_events.bus import CommandClient
from sdv_events.desired_signing import DesiredSigner
from sdv_events.key_files import load_or_create_ed25519, write_public_key
from sdv_events.processing import (
    ConsumerRunner,
    HistorySource,
    OwnThenHistory,
    Processor,
    Projection,
    StoreSource,
)
from sdv_events.provisioning import DESIRED_BUCKET
from sdv_events.service import ServiceRuntime, run_service
from sdv_events.settings import settings_or_exit
from sdv_orchestrator.adapters.commands import command_router, public_key_router
from sdv_orchestrator.adapters.facts import AgentFacts
from sdv_orchestrator.adapters.facts_watermark import FactsWatermark
from sdv_orchestrator.adapters.peers import Peers
from sdv_orchestrator.adapters.policy_commands import policy_router
from sdv_orchestrator.adapters.signal_catalogs import SignalCatalogs
from sdv_orchestrator.adapters.ticker import Ticker
from sdv_orchestrator.application import Orchestrator
from sdv_orchestrator.policies import Policies, PolicyEvents
from sdv_orchestrator.projections import DesiredStates, Presence, RolloutCatalog
from sdv_orchestrator.settings import SERVICE, OrchestratorSettings, load_settings

log = structlog.get_logger("sdv.orchestrator")


async def serve(settings: OrchestratorSettings, stop: asyncio.Event | None = None) -> None:
    signer = DesiredSigner(load_or_create_ed25519(settings.signing_key_path))
    write_public_key(settings.public_key_path, signer.public_key_b64)

    async def on_start(runtime: ServiceRuntime) -> None:
        log.info("desired_signing_key", key_id=signer.key_id, public_key=signer.public_key_b64,
                 public_key_file=str(settings.public_key_path))
        schema = settings.schema_name
        catalog = RolloutCatalog(schema)
        desired = DesiredStates(schema, await runtime.js.key_value(DESIRED_BUCKET), signer,
                                runtime.store.pool)
        presence = Presence(schema, runtime.store.pool)
        nc = runtime.broker.config.connection_state.connection
        peers = Peers(CommandClient(nc, actor=f"service:{SERVICE}"), SignalCatalogs(runtime.js))
        orchestrator = Orchestrator(runtime.store, peers, desired,
                                    presence=presence, tolerance_s=settings.clock_skew_s)
        async with runtime.store.pool.acquire() as conn:
            # The read models' tables (sql/*.sql, shared by the three), then the write side's
            # reservations, which no read model creates or rebuilds.
            await catalog.create(conn)
            await orchestrator.reservations.create(conn)
        runtime.broker.include_router(command_router(orchestrator))
        runtime.broker.include_router(public_key_router(signer))
        policies = Policies(orchestrator, orchestrator.peers.commands)
        runtime.broker.include_router(policy_router(policies))
        # One runner for every consumer: read models, agents' facts, policies.
        source = OwnThenHistory(StoreSource(runtime.store), HistorySource(nc))
        facts = AgentFacts(orchestrator)
        consumers: list[Projection | Processor] = [
            catalog, desired, presence, facts, PolicyEvents(policies)]
        durables: dict[str, str] = {}
        for consumer in consumers:
            runner = ConsumerRunner(runtime.store.pool, schema, runtime.js, consumer, source=source,
                                    build_from=runtime.store, service=SERVICE, nc=nc)
            if consumer is facts:
                # A failed batch of facts holds the watermark (and so every timeout) back.
                runner.retry_max_s = settings.facts_retry_max_s
            durables[consumer.name] = runner.durable
            runtime.run_consumer(runner)
        watermark = FactsWatermark(runtime.js, durables[facts.name],
                                   grace_s=settings.reconnect_grace_s)
        ticker = Ticker(orchestrator.active, orchestrator.tick, watermark=watermark,
                        every_s=settings.tick_s, watermark_status=watermark.status)
        runtime.spawn(ticker.run, "ticker", probe=ticker.status)

    await run_service(SERVICE, settings, on_start=on_start, stop=stop)


def main() -> None:
    asyncio.run(serve(settings_or_exit(f"python -m sdv_{SERVICE}", load_settings)))
