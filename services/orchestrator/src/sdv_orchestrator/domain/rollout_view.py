"""A rollout's view (what `get` answers, one page of it) from its folded state: pure, so the
live service and an audit replay in a fresh process build it the same way.

Its devices are the targeted ones and, from the start, the planned devices known offline
("waiting: offline") whose wave has not started; each shows its final state once it has one.
A staged device shows `staged`, a deferred one `deferred` with its last reason; a running
rollout that waits for its start time or a window shows `waiting` (until `now` passes the
time it waits for: the next tick targets then).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sdv_events.schemas.rollouts import DeviceProgressView, RolloutView, WaveView
from sdv_events.schemas.scheduling import Waiting
from sdv_orchestrator.domain.deferral import deferral_of
from sdv_orchestrator.domain.rollout import RolloutState
from sdv_orchestrator.domain.targeting import waiting_message

# A device still targeted when the rollout ended without it: what became of the rollout.
_ENDED_TARGETED = {"cancelled": "cancelled", "aborted": "aborted"}
_STAGED = "downloaded and verified; waiting to switch"


def waiting_of(s: RolloutState, now: datetime | None) -> Waiting | None:
    """Whether the rollout waits (for its start time or a window) at `now` (None: as recorded)."""
    w = s.targeting.waiting
    if s.status != "running" or w is None or s.targeting.queue.left <= 0 or s.wave_completed_at:
        return None
    if now is not None and w.until is not None and w.until <= now:
        return None
    return Waiting(reason=w.reason, until=w.until, since=w.at, message=waiting_message(w))


def view_of(rollout_id: str, s: RolloutState, offset: int = 0, limit: int = 1000,
            now: datetime | None = None) -> RolloutView:
    """Rows [offset, offset + limit) of waves, devices and excluded."""
    assert s.created is not None
    end = offset + limit
    offline_by_wave: dict[int, int] = {}
    for wave in s.offline.values():
        offline_by_wave[wave] = offline_by_wave.get(wave, 0) + 1
    waves = []
    for index, count in enumerate(s.counts[offset:end], start=offset):
        if index < s.current_wave or (index == s.current_wave and s.wave_completed_at):
            wave_state = "completed"
        elif index == s.current_wave:
            wave_state = "aborted" if s.status in ("aborted", "rolled_back") else "running"
        else:
            wave_state = "waiting"
        queued = s.targeting.queue.left if wave_state == "running" else 0
        waves.append(WaveView(index, count.size, count.succeeded, count.failed, count.pending,
                              wave_state, count.skipped, offline_by_wave.get(index, 0), queued))
    waiting = {d: w for d, w in s.offline.items() if d not in s.devices}
    listed = sorted(s.devices.keys() | waiting.keys())
    devices = []
    for device_id in listed[offset:end]:
        entry = s.devices.get(device_id)
        if entry is None:
            devices.append(DeviceProgressView(device_id, waiting[device_id], "waiting_offline",
                                              "offline when planned"))
            continue
        wave, status, _ = entry
        shown = _ENDED_TARGETED.get(s.status, status) if status == "targeted" else status
        last = s.deferrals.get(device_id) if status == "deferred" else None
        if last is not None:
            devices.append(DeviceProgressView(device_id, wave, shown, last.reason, deferral_of(last)))
            continue
        reason = _STAGED if status == "staged" else s.reasons.get(device_id, "")
        devices.append(DeviceProgressView(device_id, wave, shown, reason))
    statuses = Counter(status for _, status, _ in s.devices.values())
    deferred_by = Counter(
        "held" if last.held else (last.gate or "other")
        for device_id, last in s.deferrals.items()
        if last is not None and s.devices[device_id][1] == "deferred")
    waits = waiting_of(s, now)
    excluded = sorted(s.excluded)[offset:end]
    rollback = "" if not s.rolled_back else "in_progress" if s.rollback_open else "completed"
    return RolloutView(
        rollout_id=rollout_id, app=s.created.package.name, version=s.created.package.version,
        status="waiting" if waits is not None else s.status, target=s.created.target,
        strategy=s.created.strategy, waves=waves,
        devices=devices, excluded={d: s.excluded[d] for d in excluded},
        current_wave=s.current_wave, reason=s.reason, created_at=s.created.created_at,
        offset=offset, limit=limit, waves_total=len(s.counts), devices_total=len(listed),
        excluded_total=len(s.excluded), succeeded_total=sum(c.succeeded for c in s.counts),
        failed_total=sum(c.failed for c in s.counts), offline=s.created.offline,
        offline_total=len(s.offline), skipped_total=sum(c.skipped for c in s.counts),
        already_current_total=s.already_current, rollback=rollback,
        rolled_back_total=s.rollback_ok, rollback_unconfirmed_total=s.rollback_unconfirmed,
        schedule=s.created.schedule, waiting=waits,
        queued_total=s.targeting.queue.left if s.active and s.wave_completed_at is None else 0,
        staged_total=statuses["staged"] + statuses["deferred"], deferred_total=statuses["deferred"],
        deferred_by=dict(deferred_by), activated_total=len(s.activated),
    )
