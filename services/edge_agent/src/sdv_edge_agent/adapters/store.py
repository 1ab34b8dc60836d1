"""The agent's SQLite database: app records, the desired document, the fact outbox, console logs.

One file, WAL mode, `synchronous=NORMAL` (a commit is durable once checkpointed; a power cut can
lose the last few hundred milliseconds, never corrupt the file). Calls are short and made from the
event loop thread: each is one small transaction.

Console logs are indexed with FTS5 (external-content table kept in sync by triggers), so the local
history is searchable; lines not yet on the bus have `sent = 0` and are flushed in id order.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.records import AppRecord
from sdv_events.schemas.deployment import DesiredState
from sdv_events.schemas.packages import PackageInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS apps (name TEXT PRIMARY KEY, record BLOB NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    headers BLOB NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    stream TEXT NOT NULL,
    ts REAL NOT NULL,
    line TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS logs_unsent ON logs (id) WHERE sent = 0;
CREATE INDEX IF NOT EXISTS logs_app ON logs (app, id);
CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5 (line, content='logs', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS logs_ai AFTER INSERT ON logs BEGIN
    INSERT INTO logs_fts (rowid, line) VALUES (new.id, new.line);
END;
CREATE TRIGGER IF NOT EXISTS logs_ad AFTER DELETE ON logs BEGIN
    INSERT INTO logs_fts (logs_fts, rowid, line) VALUES ('delete', old.id, old.line);
END;
"""


class _StoredRecord(msgspec.Struct, kw_only=True):
    """AppRecord's persisted form (msgspec JSON: typed on the way back in)."""

    name: str
    state: str | None = None
    package: PackageInfo | None = None
    previous: PackageInfo | None = None
    attempt: PackageInfo | None = None
    config: dict[str, str] = {}
    rollout_id: str | None = None
    revision: int = 0
    healthy: bool = False
    healthy_at: float | None = None
    on_trial: bool = False
    restarts: int = 0
    crashes: tuple[float, ...] = ()
    runs: int = 0
    last_error: str | None = None
    failed_digest: str | None = None
    failed_rollout: str | None = None
    held: str | None = None
    pid: int | None = None
    pid_started: float | None = None
    started_at: float | None = None
    candidate: tuple[int, float] | None = None
    staged: PackageInfo | None = None
    deferred: str | None = None


@dataclass(frozen=True)
class LogLine:
    id: int
    app: str
    stream: str
    ts: float
    line: str


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    msg_id: str
    subject: str
    headers: dict[str, str]
    payload: bytes


class AgentStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # WAL and shm files inherit its mode
        path.chmod(0o600)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- meta: the desired document and small values -------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def load_desired(self) -> DesiredState | None:
        raw = self.get_meta("desired")
        return None if raw is None else msgspec.json.decode(raw, type=DesiredState)

    def save_desired(self, desired: DesiredState) -> None:
        self.set_meta("desired", msgspec.json.encode(desired))

    # --- app records ----------------------------------------------------------------------------

    def save_app(self, record: AppRecord) -> None:
        stored = _StoredRecord(
            name=record.name, state=record.state.value if record.state else None,
            package=record.package, previous=record.previous, attempt=record.attempt,
            config=record.config,
            rollout_id=record.rollout_id, revision=record.revision, healthy=record.healthy,
            healthy_at=record.healthy_at, on_trial=record.on_trial, restarts=record.restarts,
            crashes=record.crashes, runs=record.runs, last_error=record.last_error,
            failed_digest=record.failed_digest, failed_rollout=record.failed_rollout,
            held=record.held, pid=record.pid, pid_started=record.pid_started,
            started_at=record.started_at, candidate=record.candidate, staged=record.staged,
            deferred=record.deferred,
        )
        self.db.execute(
            "INSERT INTO apps (name, record, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
            (record.name, msgspec.json.encode(stored), time.time()),
        )

    def delete_app(self, name: str) -> None:
        self.db.execute("DELETE FROM apps WHERE name = ?", (name,))

    def load_apps(self) -> list[AppRecord]:
        records = []
        for (raw,) in self.db.execute("SELECT record FROM apps ORDER BY name"):
            s = msgspec.json.decode(raw, type=_StoredRecord)
            records.append(AppRecord(
                name=s.name, state=AppState(s.state) if s.state else None, package=s.package,
                previous=s.previous, attempt=s.attempt, config=dict(s.config), rollout_id=s.rollout_id,
                revision=s.revision, healthy=s.healthy, healthy_at=s.healthy_at, on_trial=s.on_trial,
                restarts=s.restarts, crashes=s.crashes, runs=s.runs,
                last_error=s.last_error, failed_digest=s.failed_digest,
                failed_rollout=s.failed_rollout, held=s.held,  # type: ignore[arg-type]
                pid=s.pid, pid_started=s.pid_started, started_at=s.started_at,
                candidate=s.candidate, staged=s.staged, deferred=s.deferred,
            ))
        return records

    # --- counters: the fact stream version and occurrence numbers -------------------------------

    def next_counter(self, key: str) -> int:
        """1, 2, 3 … per key, persisted: never reused after a restart."""
        row = self.db.execute(
            "INSERT INTO counters (key, value) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
            (key,),
        ).fetchone()
        return int(row[0])

    # --- the fact outbox ------------------------------------------------------------------------

    def has_fact(self, msg_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM outbox WHERE msg_id = ?", (msg_id,)).fetchone() is not None

    def add_fact(self, msg_id: str, subject: str, headers: dict[str, str], payload: bytes) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO outbox (msg_id, subject, headers, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (msg_id, subject, msgspec.json.encode(headers), payload, time.time()),
        )

    def unsent_facts(self, limit: int = 100) -> list[OutboxRow]:
        rows = self.db.execute(
            "SELECT seq, msg_id, subject, headers, payload FROM outbox WHERE sent_at IS NULL "
            "ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [OutboxRow(r[0], r[1], r[2], msgspec.json.decode(r[3], type=dict[str, str]), bytes(r[4]))
                for r in rows]

    def mark_fact_sent(self, seq: int) -> None:
        self.db.execute("UPDATE outbox SET sent_at = ? WHERE seq = ?", (time.time(), seq))

    def prune_facts(self, older_than_s: float) -> None:
        """Sent facts are kept a while so a repeated fact is recognised locally, then dropped."""
        self.db.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
                        (time.time() - older_than_s,))

    # --- console logs ---------------------------------------------------------------------------

    def add_logs(self, app: str, rows: list[tuple[str, float, str]], tail_key: str,
                 offsets: dict[str, int]) -> None:
        """Console lines of one app and the file positions reached, in one transaction: after a
        crash the agent neither loses nor repeats a line."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO logs (app, stream, ts, line) VALUES (?, ?, ?, ?)",
                [(app, stream, ts, line) for stream, ts, line in rows],
            )
            self.set_meta(f"tail:{tail_key}", msgspec.json.encode(offsets))

    def tail_offsets(self, tail_key: str) -> dict[str, int]:
        raw = self.get_meta(f"tail:{tail_key}")
        return {} if raw is None else msgspec.json.decode(raw, type=dict[str, int])

    def reset_tail(self, tail_key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", (f"tail:{tail_key}",))

    def unsent_logs(self, limit: int = 500) -> list[LogLine]:
        rows = self.db.execute(
            "SELECT id, app, stream, ts, line FROM logs WHERE sent = 0 ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [LogLine(*r) for r in rows]

    def mark_logs_sent(self, ids: list[int]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE logs SET sent = 1 WHERE id = ?", [(i,) for i in ids])

    def tail_logs(self, app: str | None, limit: int = 50, stream: str | None = None) -> list[LogLine]:
        """The last `limit` lines of `app` (None: of every app), oldest first."""
        sql = "SELECT id, app, stream, ts, line FROM logs WHERE " + ("app = ?" if app else "1")
        args: list[object] = [app] if app else []
        if stream:
            sql += " AND stream = ?"
            args.append(stream)
        rows = self.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [LogLine(*r) for r in reversed(rows)]

    def search_logs(self, query: str, app: str | None = None, limit: int = 50) -> list[LogLine]:
        """FTS5 match (`WARNING AND speed`, `"over limit"`, `spe*`), newest last."""
        sql = ("SELECT l.id, l.app, l.stream, l.ts, l.line FROM logs_fts f JOIN logs l ON l.id = f.rowid "
               "WHERE logs_fts MATCH ?")
        args: list[object] = [query]
        if app:
            sql += " AND l.app = ?"
            args.append(app)
        rows = self.db.execute(sql + " ORDER BY l.id DESC LIMIT ?", (*args, limit)).fetchall()
        return [LogLine(*r) for r in reversed(rows)]

    def prune_logs(self, keep: int) -> None:
        """Keep the newest `keep` lines that are on the bus; unsent lines are never dropped here."""
        self.db.execute(
            "DELETE FROM logs WHERE sent = 1 "
            "AND id <= (SELECT id FROM logs ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (keep,),
        )
