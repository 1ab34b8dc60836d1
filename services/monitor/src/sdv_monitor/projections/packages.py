"""Packages: every published version with its channel and yank state (from the packager's
events); where each version runs is a query over the inventory (`queries.py`)."""

from __future__ import annotations

from sdv_events.envelope import Envelope
from sdv_events.schemas.packages import PackagePromoted, PackagePublished, PackageYanked
from sdv_monitor.projections.writes import Writes


class Packages:
    # Declared in sql/004_packages.sql.
    tables = ("packages",)

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.packages"

    def apply(self, writes: Writes, event: Envelope) -> None:
        at = event.occurred_at
        match event.data:
            case PackagePublished(package=p):
                writes.add(
                    self.table,
                    f"INSERT INTO {self.table} (name, version, digest, channel, runtime, size, key_id, "
                    "description, published_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$9) "
                    "ON CONFLICT (name, version) DO NOTHING",
                    p.name, p.version, p.digest, p.channel, p.runtime, p.size, p.key_id,
                    p.description[:500], at)
            case PackageYanked(name=name, version=version, reason=reason):
                writes.add(self.table, f"UPDATE {self.table} SET yanked = true, yank_reason = $3, "
                           "updated_at = $4 WHERE name = $1 AND version = $2", name, version, reason, at)
            case PackagePromoted(name=name, version=version, to_channel=channel):
                writes.add(self.table, f"UPDATE {self.table} SET channel = $3, updated_at = $4 "
                           "WHERE name = $1 AND version = $2", name, version, channel, at)
