"""The desired-state read model's tables (declared in sql/003_desired_states.sql): every write
the projection makes (projections.DesiredStates) and every query of them (a document's apps,
what a device runs now for a rollout's start, a rollout's package for a policy), in one place.
Writes take the runner's connection (rows and checkpoint commit together); queries take the
connection or pool they are given."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import asyncpg
import msgspec

from sdv_events.schemas.packages import PackageInfo
from sdv_events.store.schema import ensure_read_models

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


class DesiredView:
    tables = ("rollout_packages", "device_apps", "device_revisions", "rollout_previous_packages",
              "rollout_previous", "rollout_traces", "rollout_activations")

    def __init__(self, schema: str) -> None:
        self.schema = schema

    async def create(self, conn: asyncpg.Connection) -> None:
        await ensure_read_models(conn, "sdv_orchestrator", self.schema)

    async def seed(self, conn: asyncpg.Connection, live_schema: str) -> None:
        """Revisions from the live schema's (a rebuild counts on from them)."""
        await conn.execute(f"INSERT INTO {self.schema}.device_revisions "
                           f"SELECT device_id, revision FROM {live_schema}.device_revisions")

    # --- a rollout's terms (the projection's writes) -----------------------------------------

    async def rollout_created(self, conn: asyncpg.Connection, rollout_id: str, package: bytes,
                              gates: list[str] | None, hold: bool, traceparent: str | None,
                              tracestate: str | None) -> None:
        """Its package; its activation when it defers its devices (`gates` not None); the trace
        its agents' work joins, when it has one."""
        t = self.schema
        await conn.execute(
            f"INSERT INTO {t}.rollout_packages VALUES ($1, $2) ON CONFLICT DO NOTHING",
            rollout_id, package)
        if gates is not None:
            await conn.execute(f"INSERT INTO {t}.rollout_activations VALUES ($1, $2, $3) "
                               "ON CONFLICT DO NOTHING", rollout_id, gates, hold)
        if traceparent:
            await conn.execute(
                f"INSERT INTO {t}.rollout_traces VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                rollout_id, traceparent, tracestate)

    async def package(self, conn: Db, rollout_id: str) -> bytes | None:
        """A rollout's package, encoded."""
        raw: bytes | None = await conn.fetchval(
            f"SELECT package FROM {self.schema}.rollout_packages WHERE rollout_id = $1", rollout_id)
        return raw

    async def package_of(self, conn: Db, rollout_id: str) -> PackageInfo | None:
        raw = await self.package(conn, rollout_id)
        return None if raw is None else msgspec.json.decode(raw, type=PackageInfo)

    async def holds(self, conn: Db, rollout_id: str) -> bool:
        """Whether the rollout holds its devices until activated."""
        return bool(await conn.fetchval(
            f"SELECT hold FROM {self.schema}.rollout_activations WHERE rollout_id = $1", rollout_id))

    async def previous_packages(self, conn: asyncpg.Connection, rollout_id: str,
                                rows: list[tuple[int, bytes]]) -> None:
        """(ref, encoded package) of a plan chunk's previous packages."""
        await conn.executemany(
            f"INSERT INTO {self.schema}.rollout_previous_packages VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING", [(rollout_id, ref, p) for ref, p in rows])

    async def previous(self, conn: asyncpg.Connection, rollout_id: str,
                       rows: list[tuple[str, int]]) -> None:
        """(device, ref of its previous package) of a plan chunk's devices."""
        await conn.execute(
            f"INSERT INTO {self.schema}.rollout_previous SELECT $1, d, r "
            "FROM unnest($2::text[], $3::int[]) AS u(d, r) ON CONFLICT DO NOTHING",
            rollout_id, [d for d, _ in rows], [r for _, r in rows])

    # --- assignments (the projection's writes) -------------------------------------------------

    async def target(self, conn: asyncpg.Connection, device_id: str, app: str, package: bytes,
                     rollout_id: str, held: bool) -> None:
        """The hot path of a rollout (one per device): assign and bump the revision in one
        statement."""
        t = self.schema
        await conn.execute(f"""
            WITH assigned AS (
                INSERT INTO {t}.device_apps (device_id, app, package, rollout_id, held)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id, app)
                DO UPDATE SET package = excluded.package, rollout_id = excluded.rollout_id,
                    rollback = false, held = excluded.held)
            INSERT INTO {t}.device_revisions VALUES ($1, 1) ON CONFLICT (device_id)
            DO UPDATE SET revision = device_revisions.revision + 1""",
            device_id, app, package, rollout_id, held)

    async def release_held(self, conn: asyncpg.Connection, rollout_id: str, app: str,
                           everyone: bool, device_ids: list[str]) -> list[str]:
        """The devices this rollout still owns and holds (all, or those named), released."""
        released = await conn.fetch(
            f"UPDATE {self.schema}.device_apps SET held = false WHERE rollout_id = $1 AND app = $2 "
            "AND held AND ($3 OR device_id = ANY($4::text[])) RETURNING device_id",
            rollout_id, app, everyone, device_ids)
        return sorted(r["device_id"] for r in released)

    async def restore(self, conn: asyncpg.Connection, rollout_id: str, app: str) -> list[str]:
        """A rollback: devices this rollout still owns (a later rollout's devices are left
        alone), back to the package they ran before it, or without the app if they had none.
        The devices changed, in order."""
        t = self.schema
        restored = await conn.fetch(f"""
            WITH owned AS (
                SELECT a.device_id, p.package FROM {t}.device_apps a
                LEFT JOIN {t}.rollout_previous r
                    ON r.rollout_id = $1 AND r.device_id = a.device_id
                LEFT JOIN {t}.rollout_previous_packages p
                    ON p.rollout_id = $1 AND p.ref = r.ref
                WHERE a.app = $2 AND a.rollout_id = $1),
            removed AS (
                DELETE FROM {t}.device_apps a USING owned o
                WHERE a.device_id = o.device_id AND a.app = $2 AND o.package IS NULL
                RETURNING a.device_id),
            updated AS (
                UPDATE {t}.device_apps a SET package = o.package, rollback = true,
                    held = false
                FROM owned o
                WHERE a.device_id = o.device_id AND a.app = $2 AND o.package IS NOT NULL
                RETURNING a.device_id)
            SELECT device_id FROM removed UNION ALL SELECT device_id FROM updated
            ORDER BY device_id""", rollout_id, app)
        return [r["device_id"] for r in restored]

    async def owner(self, conn: asyncpg.Connection, device_id: str, app: str) -> str | None:
        """The rollout that assigned the device's app (None: none, or restored before
        `rollback` existed)."""
        owner: str | None = await conn.fetchval(
            f"SELECT rollout_id FROM {self.schema}.device_apps WHERE device_id = $1 AND app = $2",
            device_id, app)
        return owner

    async def unassign(self, conn: asyncpg.Connection, device_id: str, app: str) -> None:
        await conn.execute(f"DELETE FROM {self.schema}.device_apps WHERE device_id = $1 AND app = $2",
                           device_id, app)

    async def restore_one(self, conn: asyncpg.Connection, device_id: str, app: str,
                          package: bytes) -> None:
        await conn.execute(
            f"UPDATE {self.schema}.device_apps SET package = $3, rollback = true, held = false "
            "WHERE device_id = $1 AND app = $2", device_id, app, package)

    async def bump(self, conn: asyncpg.Connection, device_id: str) -> None:
        """A new revision of the device's document."""
        await conn.execute(
            f"INSERT INTO {self.schema}.device_revisions VALUES ($1, 1) ON CONFLICT (device_id) "
            "DO UPDATE SET revision = device_revisions.revision + 1", device_id)

    async def bump_many(self, conn: asyncpg.Connection, device_ids: list[str]) -> None:
        await conn.execute(
            f"UPDATE {self.schema}.device_revisions SET revision = revision + 1 "
            "WHERE device_id = ANY($1::text[])", device_ids)

    # --- documents to write to KV after the commit ---------------------------------------------

    async def mark(self, conn: asyncpg.Connection, device_ids: list[str], at: datetime) -> None:
        """The devices' documents must be (re)written once this transaction commits."""
        await conn.execute(
            f"INSERT INTO {self.schema}.desired_dirty AS d (device_id, at) "
            "SELECT unnest($1::text[]), $2 ON CONFLICT (device_id) "
            "DO UPDATE SET at = excluded.at, verify = false, gen = d.gen + 1", device_ids, at)

    async def mark_all_to_verify(self, conn: asyncpg.Connection) -> None:
        """Every device that ever had a document, to be checked against KV."""
        await conn.execute(
            f"INSERT INTO {self.schema}.desired_dirty AS d (device_id, at, verify) "
            f"SELECT device_id, now(), true FROM {self.schema}.device_revisions "
            "ON CONFLICT (device_id) DO UPDATE SET verify = true, gen = d.gen + 1")

    async def dirty(self, pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
        """Up to `limit` marks (device_id, at, verify, gen), in device order."""
        return list(await pool.fetch(
            f"SELECT device_id, at, verify, gen FROM {self.schema}.desired_dirty "
            "ORDER BY device_id LIMIT $1", limit))

    async def clear(self, pool: asyncpg.Pool, device_ids: list[str], gens: list[int]) -> None:
        """Clear these marks, unless set again since (a newer generation)."""
        await pool.execute(
            f"DELETE FROM {self.schema}.desired_dirty d USING unnest($1::text[], $2::bigint[]) "
            "AS u(device_id, gen) WHERE d.device_id = u.device_id AND d.gen = u.gen",
            device_ids, gens)

    # --- queries -------------------------------------------------------------------------------

    async def revisions(self, conn: Db, device_ids: list[str]) -> dict[str, int]:
        return {r["device_id"]: int(r["revision"]) for r in await conn.fetch(
            f"SELECT device_id, revision FROM {self.schema}.device_revisions "
            "WHERE device_id = ANY($1::text[])", device_ids)}

    async def assignments(self, conn: Db, device_ids: list[str]) -> list[asyncpg.Record]:
        """The devices' apps with their rollout's trace and gates: device_id, app, package,
        rollout_id, rollback, held, traceparent, tracestate, gates."""
        t = self.schema
        return list(await conn.fetch(
            "SELECT a.device_id, a.app, a.package, a.rollout_id, a.rollback, a.held, "
            "t.traceparent, t.tracestate, g.gates "
            f"FROM {t}.device_apps a LEFT JOIN {t}.rollout_traces t "
            f"USING (rollout_id) LEFT JOIN {t}.rollout_activations g "
            "USING (rollout_id) WHERE a.device_id = ANY($1::text[])", device_ids))

    async def current_many(self, conn: Db, device_ids: list[str],
                           app: str) -> list[tuple[str, bytes]]:
        """(device, encoded package) for the devices that have `app` assigned, in one query."""
        rows = await conn.fetch(
            f"SELECT device_id, package FROM {self.schema}.device_apps "
            "WHERE app = $1 AND device_id = ANY($2::text[])", app, device_ids)
        return [(r["device_id"], r["package"]) for r in rows]
