"""`MonitorViews`: the parts as one projection of the shared runner (one consumer, one
transaction per batch, one rebuild)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self

import asyncpg

from sdv_events.envelope import Envelope
from sdv_monitor.projections.alerts import Alerts
from sdv_monitor.projections.audit import AuditTrail
from sdv_monitor.projections.fleet import Fleet
from sdv_monitor.projections.history import DeviceHistory
from sdv_monitor.projections.inventory import Inventory
from sdv_monitor.projections.packages import Packages
from sdv_monitor.projections.rollouts import Rollouts
from sdv_monitor.projections.writes import Writes


class Part(Protocol):
    @property
    def tables(self) -> Sequence[str]: ...

    async def create(self, conn: asyncpg.Connection) -> None: ...

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
        self.parts: tuple[Part, ...] = (self.fleet, self.inventory, self.rollouts, self.packages,
                                        self.history, self.audit, self.alerts)
        self.tables = tuple(t for part in self.parts for t in part.tables)

    def at(self, schema: str) -> Self:
        return type(self)(schema)

    async def create(self, conn: asyncpg.Connection) -> None:
        for part in self.parts:
            await part.create(conn)

    async def apply(self, conn: asyncpg.Connection, event: Envelope) -> None:
        """Every part's statements for `event`, in one round trip (writes.py)."""
        writes = Writes()
        for part in self.parts:
            part.apply(writes, event)
        await writes.run(conn)
