"""Orchestrator use cases over the rollout decider and the shared command runner.

Starting a rollout is where the world is consulted: the registry for the target's devices and
their capabilities, the desired-state read model for what each device runs now (to roll back
to), and the reservations table, which enforces one active rollout per (device, app): a start
that overlaps an active rollout is refused with the devices named (not queued).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import msgspec
import structlog

from sdv_events.bus import Conflict, InvalidRequest, NotFound, Rejected
from sdv_events.commands import Accepted, StateCache, handle_command, load
from sdv_events.commands import Rejected as RejectedOutcome
from sdv_events.envelope import Metadata
from sdv_events.idempotency import IdempotencyKey
from sdv_events.ids import split_stream_id, stream_id
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    MAX_PAGE,
    CreateRolloutRequest,
    RolloutSummary,
    RolloutView,
)
from sdv_events.store import EventStore
from sdv_orchestrator.adapters.peers import Peers
from sdv_orchestrator.domain.plan_events import distinct_packages
from sdv_orchestrator.domain.planning import eligible, package_arches
from sdv_orchestrator.domain.rollout import (
    CancelRollout,
    CreateRollout,
    PauseRollout,
    Report,
    ReportDevices,
    ResumeRollout,
    RollbackRollout,
    RolloutCommand,
    RolloutState,
    StartRollout,
    Tick,
    rollout_decider,
)
from sdv_orchestrator.domain.rollout_view import view_of
from sdv_orchestrator.projections import TERMINAL, DesiredStates
from sdv_orchestrator.rollout_traces import RolloutTraces

log = structlog.get_logger("sdv.orchestrator")
_ERRORS = {"conflict": Conflict, "not_found": NotFound, "invalid_request": InvalidRequest}


def utc_now() -> datetime:
    return datetime.now(UTC)


def rollout_stream(rollout_id: str) -> str:
    return stream_id("rollout", rollout_id)


@dataclass
class Orchestrator:
    store: EventStore
    peers: Peers
    desired: DesiredStates
    clock: Callable[[], datetime] = utc_now
    cache: StateCache = field(default_factory=StateCache)
    traces: RolloutTraces = field(init=False)

    def __post_init__(self) -> None:
        self.traces = RolloutTraces(self.store)

    @property
    def schema(self) -> str:
        return self.store.schema

    async def run(self, rollout_id: str, command: RolloutCommand, *, metadata: Metadata = Metadata(),
                  key: IdempotencyKey | None = None) -> Accepted:
        stream = rollout_stream(rollout_id)
        outcome = await handle_command(
            self.store, rollout_decider, stream, command,
            key=key, metadata=await self.traces.metadata(stream, metadata), cache=self.cache,
        )
        if isinstance(outcome, RejectedOutcome):
            raise _ERRORS.get(outcome.code, Rejected)(outcome.message)
        return outcome

    async def state(self, rollout_id: str) -> RolloutState:
        # `load` takes the stream's lock with the cache (see sdv_events.commands.load).
        state, _ = await load(self.store, rollout_decider, rollout_stream(rollout_id), self.cache)
        if state.status == "none":
            raise NotFound(f"no rollout {rollout_id}")
        return state

    async def state_or_none(self, rollout_id: str) -> RolloutState | None:
        try:
            return await self.state(rollout_id)
        except NotFound:
            return None

    async def create(self, req: CreateRolloutRequest, *, metadata: Metadata = Metadata(),
                     key: IdempotencyKey | None = None) -> RolloutView:
        view = await self.peers.package(req.package, req.version)
        if view.yanked:
            raise Rejected(f"{req.package} {req.version} is yanked ({view.yank_reason}); "
                           "it cannot be rolled out")
        rollout_id = req.rollout_id or str(uuid.uuid4())
        created = await self.run(rollout_id, CreateRollout(
            rollout_id=rollout_id, package=view.info, target=req.target, strategy=req.strategy,
            thresholds=req.thresholds, timeouts=req.timeouts, auto_rollback=req.auto_rollback,
            now=self.clock(), actor=metadata.actor or "",
        ), metadata=metadata, key=key)
        # A retry of this request (same key) gets the first attempt's rollout, not a new id.
        rollout_id = split_stream_id(created.stream_id)[1]
        if req.start:
            return await self.start(rollout_id, metadata=metadata)
        return await self.get(rollout_id)

    async def start(self, rollout_id: str, *, metadata: Metadata = Metadata()) -> RolloutView:
        state = await self.state(rollout_id)
        if state.status != "created":
            return await self.get(rollout_id)
        assert state.created is not None
        package = state.created.package
        devices, unknown = await self.peers.devices(
            state.created.target, signals=bool(package.vss_reads or package.vss_writes))
        ok, excluded = eligible(package, devices, package_arches(package))
        excluded |= unknown
        async with self.store.pool.acquire() as conn, conn.transaction():
            ok = await self._reserve(conn, rollout_id, package.name, ok)
            current = await self.desired.current_many(conn, ok, package.name)
        packages, previous = distinct_packages(
            current, lambda raw: msgspec.json.decode(raw, type=PackageInfo))
        try:
            await self.run(rollout_id, StartRollout(
                device_ids=ok, excluded=excluded, previous_packages=packages, previous=previous,
                now=self.clock()), metadata=metadata)
        except Exception:
            await self.store.pool.execute(
                f"DELETE FROM {self.schema}.reservations WHERE rollout_id = $1", rollout_id)
            raise
        log.info("rollout_started", rollout_id=rollout_id, app=package.name, devices=len(ok),
                 excluded=len(excluded), upgrading=len(previous), previous_versions=len(packages))
        return await self.get(rollout_id)

    async def _reserve(self, conn: asyncpg.Connection, rollout_id: str, app: str,
                       devices: list[str]) -> list[str]:
        # One start at a time per app across replicas, so two overlapping starts cannot both pass.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sdv_reserve'), hashtext($1))", app)
        busy = await conn.fetch(
            f"SELECT device_id, rollout_id FROM {self.schema}.reservations "
            "WHERE app = $1 AND device_id = ANY($2) AND rollout_id <> $3",
            app, devices, rollout_id,
        )
        # The catalog projection releases an ended rollout's reservations a moment after its
        # end; the event store already knows. A start right after a cancel must not be refused.
        ended = [rid for rid in {r["rollout_id"] for r in busy}
                 if (s := await self.state_or_none(rid)) is not None and s.status in TERMINAL]
        if ended:
            await conn.execute(
                f"DELETE FROM {self.schema}.reservations WHERE rollout_id = ANY($1)", ended)
            busy = [r for r in busy if r["rollout_id"] not in ended]
        if busy:
            named = ", ".join(f"{r['device_id']} ({r['rollout_id']})" for r in busy[:10])
            raise Conflict(
                f"{len(busy)} device(s) are in another active rollout of {app}: {named}",
                details={r["device_id"]: r["rollout_id"] for r in busy[:100]},
            )
        await conn.executemany(
            f"INSERT INTO {self.schema}.reservations VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [(d, app, rollout_id) for d in devices],
        )
        return devices

    async def pause(self, rollout_id: str, reason: str = "", **kw: object) -> RolloutView:
        await self.run(rollout_id, PauseRollout(self.clock(), reason), **kw)  # type: ignore[arg-type]
        return await self.get(rollout_id)

    async def resume(self, rollout_id: str, **kw: object) -> RolloutView:
        await self.run(rollout_id, ResumeRollout(self.clock()), **kw)  # type: ignore[arg-type]
        return await self.get(rollout_id)

    async def cancel(self, rollout_id: str, reason: str = "", **kw: object) -> RolloutView:
        await self.run(rollout_id, CancelRollout(self.clock(), reason or "cancelled by operator"),
                       **kw)  # type: ignore[arg-type]
        return await self.get(rollout_id)

    async def rollback(self, rollout_id: str, reason: str = "", **kw: object) -> RolloutView:
        await self.run(rollout_id, RollbackRollout(self.clock(), reason or "rolled back by operator"),
                       **kw)  # type: ignore[arg-type]
        return await self.get(rollout_id)

    async def report(self, rollout_id: str, reports: list[Report]) -> None:
        """Device outcomes from agents' facts; duplicates and strangers are ignored by the decider."""
        await self.run(rollout_id, ReportDevices(reports, self.clock()))

    async def tick(self, rollout_id: str) -> None:
        await self.run(rollout_id, Tick(self.clock()))

    async def active(self) -> list[str]:
        rows = await self.store.pool.fetch(
            f"SELECT rollout_id FROM {self.schema}.rollouts WHERE status IN ('running', 'paused')")
        return [r["rollout_id"] for r in rows]

    async def get(self, rollout_id: str, offset: int = 0, limit: int = 1000) -> RolloutView:
        """One page of the view: rows [offset, offset + limit) of waves, devices and excluded
        (`limit` at most MAX_PAGE), so a reply stays small whatever the fleet."""
        if offset < 0 or not 0 < limit <= MAX_PAGE:
            raise InvalidRequest(f"offset must be >= 0 and limit in [1, {MAX_PAGE}]")
        return view_of(rollout_id, await self.state(rollout_id), offset, limit)

    async def list(self, app: str | None, status: str | None, limit: int) -> list[RolloutSummary]:
        rows = await self.store.pool.fetch(
            f"SELECT * FROM {self.schema}.rollouts WHERE ($1::text IS NULL OR app = $1) "
            "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC LIMIT $3",
            app, status, limit,
        )
        return [RolloutSummary(
            rollout_id=r["rollout_id"], app=r["app"], version=r["version"], status=r["status"],
            devices=r["devices"], succeeded=r["succeeded"], failed=r["failed"],
            created_at=r["created_at"], updated_at=r["updated_at"]) for r in rows]
