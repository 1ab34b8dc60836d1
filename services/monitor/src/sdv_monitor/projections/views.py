"""`MonitorViews`: the parts as one projection of the shared runner (one consumer, one
transaction per batch, one rebuild); each transaction also tells the dashboards what changed
once it commits (notices.py). The parts' tables are declared in the numbered files of
`sdv_monitor/sql`, set up by `create` (at start, and in a rebuild's shadow schema)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self

import asyncpg

from sdv_events.envelope import Envelope
from sdv_events.store.schema import ensure_read_models
from sdv_monitor.projections.alerts import Alerts
from sdv_monitor.projections.audit import AuditTrail
from sdv_monitor.projections.fleet import Fleet
from sdv_monitor.projections.history import DeviceHistory
from sdv_monitor.projections.inventory import Inventory
from sdv_monitor.projections.notices import channel, notice
from sdv_monitor.projections.packages import Packages
from sdv_monitor.projections.rollouts import Outcome, Rollouts
from sdv_monitor.projections.writes import Batch, Writes


class Part(Protocol):
    @property
    def tables(self) -> Sequence[str]: ...

    def apply(self, writes: Writes, event: Envelope) -> None:
        """Add the statements `event` means to this part's tables."""
        ...


class MonitorViews:
    name = "monitor_views"
    # Services' categories whole (the runner needs them whole to find gaps), and the facts the
    # monitor recorded itself.
    filter_subjects = ("sdv.evt.device.>", "sdv.evt.rollout.>", "sdv.evt.package.>",
                       "sdv.evt.policy.>", "sdv.evt.facts.>", "sdv.evt.alert.>")

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.fleet = Fleet(schema)
        self.inventory = Inventory(schema)
        self.rollouts = Rollouts(schema)
        self.packages = Packages(schema)
        self.history = DeviceHistory(schema)
        self.audit = AuditTrail(schema)
        self.alerts = Alerts(schema)
        # The parts that update rows, and those that only add rows (history, audit).
        self.updating: tuple[Part, ...] = (self.fleet, self.inventory, self.rollouts, self.packages,
                                           self.alerts)
        self.parts: tuple[Part, ...] = (*self.updating, self.history, self.audit)
        # The updating parts but the rollouts' (a run of devices' outcomes goes set-wise).
        self.others = tuple(p for p in self.updating if p is not self.rollouts)
        self.tables = tuple(t for part in self.parts for t in part.tables)
        self.channel = channel(schema)

    def at(self, schema: str) -> Self:
        return type(self)(schema)

    async def create(self, conn: asyncpg.Connection) -> None:
        """Create or update every part's tables in this schema (idempotent: sql/*.sql)."""
        await ensure_read_models(conn, "sdv_monitor", self.schema)

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        """Every part's statements for `event`, in one round trip (writes.py)."""
        writes = Writes()
        for part in self.parts:
            part.apply(writes, event)
        await writes.run(conn)
        await self._notify(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        """A fetched batch, as applying its events one by one would leave the tables: the
        parts that update rows, event after event (runs of the same statement in one round
        trip each: writes.Batch), a run of devices' outcomes in a rollout set-wise
        (`Rollouts.outcomes`); then the lines of the history and the audit trail, which only
        add rows, one statement each for the whole batch."""
        batch = Batch()
        history: list[tuple[object, ...]] = []
        audit: list[tuple[object, ...]] = []
        outcomes: list[Outcome] = []
        pairs: set[tuple[str, str]] = set()  # (rollout, device) of `outcomes`
        for event in events:
            writes = Writes()
            for part in self.others:
                part.apply(writes, event)
            outcome = self.rollouts.outcome(event) if not writes.statements else None
            if outcome is not None:
                pair = (outcome.rollout_id, outcome.device_id)
                if pair in pairs:  # a device twice in a run: the second starts another run
                    self._flush(batch, outcomes, pairs)
                outcomes.append(outcome)
                pairs.add(pair)
            else:
                self._flush(batch, outcomes, pairs)
                self.rollouts.apply(writes, event)
                batch.add(writes)
            if (line := self.history.row(event)) is not None:
                history.append(line)
            audit.append(self.audit.row(event))
        self._flush(batch, outcomes, pairs)
        await batch.run(conn)
        await self.history.insert(conn, history)
        await self.audit.insert(conn, audit)  # last: it reads the rollouts' rows
        await self._notify(conn, events)

    def _flush(self, batch: Batch, outcomes: list[Outcome], pairs: set[tuple[str, str]]) -> None:
        if outcomes:
            for writes in self.rollouts.outcomes(outcomes):
                batch.add(writes)
            outcomes.clear()
            pairs.clear()

    async def _notify(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        """Sent by PostgreSQL when the transaction commits, not before (notices.py)."""
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, notice(events))
