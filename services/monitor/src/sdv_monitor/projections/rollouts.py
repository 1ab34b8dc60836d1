"""Rollouts: status, waves, per-device outcome and timings, excluded devices with reasons —
from the orchestrator's rollout events (`rollout-<id>`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sdv_events.envelope import Envelope
from sdv_events.ids import split_stream_id
from sdv_events.schemas.rollouts import (
    DeviceBackOnline,
    DeviceFailed,
    DeviceOffline,
    DeviceRollbackUnconfirmed,
    DeviceRolledBack,
    DevicesExcluded,
    DevicesOffline,
    DevicesPlanned,
    DeviceSucceeded,
    DeviceTargeted,
    DeviceTimedOut,
    RollbackCompleted,
    RollbackStarted,
    RollbackStartedV1,
    RolloutAborted,
    RolloutCancelled,
    RolloutCompleted,
    RolloutCreated,
    RolloutPaused,
    RolloutPlanned,
    RolloutPlannedV1,
    RolloutResumed,
    WaveCompleted,
    WaveStarted,
)
from sdv_events.schemas.scheduling import DeviceDeferred, DeviceStaged, RolloutWaiting
from sdv_monitor.projections.writes import Writes, columns

TERMINAL = ("completed", "aborted", "cancelled", "rolled_back")


class Outcome(NamedTuple):
    rollout_id: str
    device_id: str
    wave: int
    column: str  # the count it adds to: succeeded | failed
    status: str
    reason: str
    at: datetime
    timed_out: bool = False


class Rollouts:
    # Declared in sql/003_rollouts.sql.
    tables = ("rollouts", "rollout_waves", "rollout_devices", "rollout_excluded")

    def __init__(self, schema: str) -> None:
        self.s = schema

    def _set(self, writes: Writes, rid: str, event: Envelope, sql: str, *args: object) -> None:
        writes.add(f"{self.s}.rollouts",
                   f"UPDATE {self.s}.rollouts SET updated_at = $2, {sql} WHERE rollout_id = $1",
                   rid, event.occurred_at, *args)

    def _end(self, writes: Writes, rid: str, event: Envelope, status: str, reason: str = "") -> None:
        self._set(writes, rid, event, "status = $3, reason = $4, ended_at = $2", status, reason)

    def _device(self, writes: Writes, rid: str, event: Envelope, device_id: str, wave: int,
                column: str, status: str, reason: str = "", *, timed_out: bool = False) -> None:
        """A device's outcome: its row, and the counts of its rollout and its wave."""
        s = self.s
        writes.add(f"{s}.rollout_devices",
                   f"UPDATE {s}.rollout_devices SET status = $3, reason = $4, finished_at = $5 "
                   "WHERE rollout_id = $1 AND device_id = $2", rid, device_id, status, reason,
                   event.occurred_at)
        self._set(writes, rid, event, f"{column} = {column} + 1"
                  + (", timed_out = timed_out + 1" if timed_out else ""))
        writes.add(f"{s}.rollout_waves", f"UPDATE {s}.rollout_waves SET {column} = {column} + 1 "
                   "WHERE rollout_id = $1 AND wave = $2", rid, wave)

    def _device_row(self, writes: Writes, rid: str, device_id: str, status: str, reason: str,
                    finished_at: datetime | None) -> None:
        """A device's row only: a state that is not an outcome counted by the rollout."""
        writes.add(f"{self.s}.rollout_devices",
                   f"UPDATE {self.s}.rollout_devices SET status = $3, reason = $4, "
                   "finished_at = coalesce($5, finished_at) WHERE rollout_id = $1 AND device_id = $2",
                   rid, device_id, status, reason, finished_at)

    def apply(self, writes: Writes, event: Envelope) -> None:
        category, rid = split_stream_id(event.stream_id)
        if category != "rollout":
            return
        s, data = self.s, event.data
        match data:
            case RolloutCreated(package=p, target=target, strategy=strategy, created_by=by):
                what = target.selector or ",".join(target.device_ids or [])
                writes.add(
                    f"{s}.rollouts",
                    f"INSERT INTO {s}.rollouts (rollout_id, app, version, digest, status, created_by, "
                    "target, strategy, created_at, updated_at) VALUES ($1,$2,$3,$4,'created',$5,$6,$7,$8,$8) "
                    "ON CONFLICT DO NOTHING", rid, p.name, p.version, p.digest, by, what[:1000],
                    f"{strategy.kind} {' '.join(strategy.waves)}", event.occurred_at)
            case RolloutPlanned(devices=n, waves=waves, excluded=excluded):
                self._set(writes, rid, event, "status = 'running', devices = $3, waves = $4, excluded = $5",
                          n, waves, excluded)
            case RolloutPlannedV1(waves=waves, excluded=excluded):
                self._set(writes, rid, event, "status = 'running', devices = $3, waves = $4, excluded = $5",
                          sum(len(w) for w in waves), len(waves), len(excluded))
                self._planned(writes, rid, [(d, i) for i, w in enumerate(waves) for d in w])
                self._excluded(writes, rid, list(excluded.items()))
            case DevicesPlanned(devices=devices):
                self._planned(writes, rid, [(d.device_id, d.wave) for d in devices])
            case DevicesExcluded(devices=devices):
                self._excluded(writes, rid, [(d.device_id, d.reason) for d in devices])
            case DevicesOffline(devices=devices) if devices:
                # Planned devices offline when planned: shown as waiting for them from the start.
                writes.add(
                    f"{s}.rollout_devices",
                    f"INSERT INTO {s}.rollout_devices (rollout_id, device_id, wave, status, reason) "
                    "SELECT $1, d, w, 'offline', 'offline when planned' FROM unnest($2::text[], $3::int[]) "
                    "AS u(d, w) ON CONFLICT (rollout_id, device_id) DO UPDATE SET status = 'offline', "
                    "reason = 'offline when planned'",
                    rid, [d.device_id for d in devices], [d.wave for d in devices])
            case WaveStarted(wave=wave, size=size, at=at):
                writes.add(
                    f"{s}.rollout_waves",
                    f"INSERT INTO {s}.rollout_waves (rollout_id, wave, size, state, started_at) "
                    "VALUES ($1,$2,$3,'running',$4) ON CONFLICT (rollout_id, wave) DO UPDATE SET "
                    "state = 'running', size = excluded.size, started_at = excluded.started_at",
                    rid, wave, size, at)
                self._set(writes, rid, event, "current_wave = $3", wave)
            case DeviceTargeted(device_id=d, wave=wave, deadline=deadline):
                writes.add(
                    f"{s}.rollout_devices",
                    f"INSERT INTO {s}.rollout_devices (rollout_id, device_id, wave, status, targeted_at, "
                    "deadline) VALUES ($1,$2,$3,'targeted',$4,$5) ON CONFLICT (rollout_id, device_id) "
                    "DO UPDATE SET status = 'targeted', targeted_at = $4, deadline = $5",
                    rid, d, wave, event.occurred_at, deadline)
                # Targeting again ends a wait for a start time or a window (a no-op, with no new
                # row version, for the thousands of targeted events of a rollout that never waited).
                writes.add(f"{s}.rollouts",
                           f"UPDATE {s}.rollouts SET status = 'running', waiting_reason = '', "
                           "waiting_until = NULL, updated_at = $2 "
                           "WHERE rollout_id = $1 AND status = 'waiting'",
                           rid, event.occurred_at)
            case RolloutWaiting(reason=why, until=until):
                self._set(writes, rid, event, "status = CASE WHEN status IN ('created', 'running') "
                          "THEN 'waiting' ELSE status END, waiting_reason = $3, waiting_until = $4",
                          "its start time" if why == "start_at" else "a maintenance window", until)
            case DeviceStaged(device_id=d, deadline=deadline):
                writes.add(f"{s}.rollout_devices",
                           f"UPDATE {s}.rollout_devices SET status = 'staged', deadline = $3, "
                           "reason = 'downloaded and verified, waiting to switch' "
                           "WHERE rollout_id = $1 AND device_id = $2", rid, d, deadline)
            case DeviceDeferred(device_id=d, reason=reason, signal=signal, value=value, held=held):
                said = (reason if held or signal is None or signal in reason
                        else f"{reason} ({signal} = {value})")
                self._device_row(writes, rid, d, "held" if held else "deferred", said[:1000], None)
            case DeviceSucceeded() | DeviceFailed() | DeviceTimedOut() | DeviceOffline(outcome="failed"):
                if (o := self.outcome(event)) is not None:
                    self._device(writes, rid, event, o.device_id, o.wave, o.column, o.status, o.reason,
                                 timed_out=o.timed_out)
            case DeviceOffline(device_id=d, outcome=outcome):  # skipped (not counted) or waiting
                status, reason = (("skipped", "offline at its deadline: skipped") if outcome == "skipped"
                                  else ("offline", "offline at its deadline: waiting until it is back"))
                self._device_row(writes, rid, d, status, reason,
                                 event.occurred_at if outcome == "skipped" else None)
            case DeviceBackOnline(device_id=d, deadline=deadline):
                writes.add(f"{s}.rollout_devices",
                           f"UPDATE {s}.rollout_devices SET status = 'targeted', reason = 'back online', "
                           "deadline = $3 WHERE rollout_id = $1 AND device_id = $2", rid, d, deadline)
            case DeviceRolledBack(device_id=d):
                # Rolled back, and why it was: a failed device keeps its failure's reason.
                writes.add(f"{s}.rollout_devices",
                           f"UPDATE {s}.rollout_devices SET status = 'rolled_back', reason = CASE "
                           "WHEN status IN ('failed', 'timed_out', 'offline') AND reason <> '' "
                           "THEN reason || '; rolled back' ELSE 'previous version running again' END, "
                           "finished_at = $3 WHERE rollout_id = $1 AND device_id = $2",
                           rid, d, event.occurred_at)
                self._set(writes, rid, event, "rolled_back = rolled_back + 1")
            case DeviceRollbackUnconfirmed(device_id=d, reason=reason):
                self._device_row(writes, rid, d, "rollback_unconfirmed", reason, event.occurred_at)
                self._set(writes, rid, event, "rollback_unconfirmed = rollback_unconfirmed + 1")
            case RollbackCompleted(at=at):
                self._set(writes, rid, event, "rollback_completed_at = $3", at)
            case WaveCompleted(wave=wave, at=at):
                writes.add(f"{s}.rollout_waves",
                           f"UPDATE {s}.rollout_waves SET state = 'completed', completed_at = $3 "
                           "WHERE rollout_id = $1 AND wave = $2", rid, wave, at)
            case RolloutPaused(reason=reason):
                self._set(writes, rid, event, "status = 'paused', reason = $3", reason)
            case RolloutResumed():
                self._set(writes, rid, event, "status = 'running', reason = ''")
            case RolloutAborted(reason=reason, wave=wave):
                writes.add(f"{s}.rollout_waves", f"UPDATE {s}.rollout_waves SET state = 'aborted' "
                           "WHERE rollout_id = $1 AND wave = $2", rid, wave)
                self._end(writes, rid, event, "aborted", reason)
            case RollbackStarted(reason=reason) | RollbackStartedV1(reason=reason):
                self._end(writes, rid, event, "rolled_back", reason)
            case RolloutCompleted():
                self._end(writes, rid, event, "completed")
            case RolloutCancelled(reason=reason):
                self._end(writes, rid, event, "cancelled", reason)

    def outcome(self, event: Envelope) -> Outcome | None:
        """A device's outcome in a rollout (the events of a wave that come by the thousand)."""
        category, rid = split_stream_id(event.stream_id)
        if category != "rollout":
            return None
        match event.data:
            case DeviceSucceeded(device_id=d, wave=wave, reason=reason):
                return Outcome(rid, d, wave, "succeeded", "succeeded", reason, event.occurred_at)
            case DeviceFailed(device_id=d, wave=wave, reason=reason):
                return Outcome(rid, d, wave, "failed", "failed", reason, event.occurred_at)
            case DeviceTimedOut(device_id=d, wave=wave):
                return Outcome(rid, d, wave, "failed", "timed_out", "no report before the deadline",
                               event.occurred_at, timed_out=True)
            case DeviceOffline(device_id=d, wave=wave, outcome="failed"):
                return Outcome(rid, d, wave, "failed", "offline", "offline at its deadline",
                               event.occurred_at)
        return None

    def outcomes(self, outcomes: Sequence[Outcome]) -> list[Writes]:
        """The statements of a run of outcomes, set-wise: the devices' rows in one, the counts
        of their rollouts and waves added up and written once each (one update per event of
        the same rollout's row is a chain of row versions to walk in one transaction). As the
        events one by one would leave them; each (rollout, device) at most once in the run."""
        s = self.s
        rollouts: dict[str, list[Any]] = {}  # rollout → [last at, succeeded, failed, timed out]
        waves: dict[tuple[str, int], list[int]] = {}  # (rollout, wave) → [succeeded, failed]
        for o in outcomes:
            counts = rollouts.setdefault(o.rollout_id, [o.at, 0, 0, 0])
            counts[0] = o.at
            counts[1 if o.column == "succeeded" else 2] += 1
            counts[3] += o.timed_out
            wave = waves.setdefault((o.rollout_id, o.wave), [0, 0])
            wave[0 if o.column == "succeeded" else 1] += 1
        devices, totals, by_wave = Writes(), Writes(), Writes()
        devices.add(f"{s}.rollout_devices",
                    f"UPDATE {s}.rollout_devices d SET status = u.st, reason = u.re, finished_at = u.at "
                    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) "
                    "AS u(r, dv, st, re, at) WHERE d.rollout_id = u.r AND d.device_id = u.dv",
                    *columns([(o.rollout_id, o.device_id, o.status, o.reason, o.at) for o in outcomes]))
        totals.add(f"{s}.rollouts",
                   f"UPDATE {s}.rollouts r SET updated_at = u.at, succeeded = r.succeeded + u.s, "
                   "failed = r.failed + u.f, timed_out = r.timed_out + u.t "
                   "FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::int[], $5::int[]) "
                   "AS u(id, at, s, f, t) WHERE r.rollout_id = u.id",
                   *columns([(rid, *counts) for rid, counts in rollouts.items()]))
        by_wave.add(f"{s}.rollout_waves",
                    f"UPDATE {s}.rollout_waves w SET succeeded = w.succeeded + u.s, "
                    "failed = w.failed + u.f FROM unnest($1::text[], $2::int[], $3::int[], $4::int[]) "
                    "AS u(r, wv, s, f) WHERE w.rollout_id = u.r AND w.wave = u.wv",
                    *columns([(rid, wave, *counts) for (rid, wave), counts in waves.items()]))
        return [devices, totals, by_wave]

    def _planned(self, writes: Writes, rid: str, devices: list[tuple[str, int]]) -> None:
        if devices:
            writes.add(f"{self.s}.rollout_devices",
                       f"INSERT INTO {self.s}.rollout_devices (rollout_id, device_id, wave) "
                       "SELECT $1, d, w FROM unnest($2::text[], $3::int[]) AS u(d, w) ON CONFLICT DO NOTHING",
                       rid, [d for d, _ in devices], [w for _, w in devices])

    def _excluded(self, writes: Writes, rid: str, devices: list[tuple[str, str]]) -> None:
        if devices:
            writes.add(f"{self.s}.rollout_excluded",
                       f"INSERT INTO {self.s}.rollout_excluded "
                       "SELECT $1, d, r FROM unnest($2::text[], $3::text[]) AS u(d, r) "
                       "ON CONFLICT DO NOTHING",
                       rid, [d for d, _ in devices], [r for _, r in devices])
