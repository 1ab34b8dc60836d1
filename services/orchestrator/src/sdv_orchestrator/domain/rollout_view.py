"""A rollout's view (what `get` answers, one page of it) from its folded state: pure, so the
live service and an audit replay in a fresh process build it the same way.

Its devices are the targeted ones and, from the start, the planned devices known offline
("waiting: offline") whose wave has not started; each shows its final state once it has one.
"""

from __future__ import annotations

from sdv_events.schemas.rollouts import DeviceProgressView, RolloutView, WaveView
from sdv_orchestrator.domain.rollout import RolloutState

# A device still targeted when the rollout ended without it: what became of the rollout.
_ENDED_TARGETED = {"cancelled": "cancelled", "aborted": "aborted"}


def view_of(rollout_id: str, s: RolloutState, offset: int = 0, limit: int = 1000) -> RolloutView:
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
        waves.append(WaveView(index, count.size, count.succeeded, count.failed, count.pending,
                              wave_state, count.skipped, offline_by_wave.get(index, 0)))
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
        devices.append(DeviceProgressView(device_id, wave, shown, s.reasons.get(device_id, "")))
    excluded = sorted(s.excluded)[offset:end]
    rollback = "" if not s.rolled_back else "in_progress" if s.rollback_open else "completed"
    return RolloutView(
        rollout_id=rollout_id, app=s.created.package.name, version=s.created.package.version,
        status=s.status, target=s.created.target, strategy=s.created.strategy, waves=waves,
        devices=devices, excluded={d: s.excluded[d] for d in excluded},
        current_wave=s.current_wave, reason=s.reason, created_at=s.created.created_at,
        offset=offset, limit=limit, waves_total=len(s.counts), devices_total=len(listed),
        excluded_total=len(s.excluded), succeeded_total=sum(c.succeeded for c in s.counts),
        failed_total=sum(c.failed for c in s.counts), offline=s.created.offline,
        offline_total=len(s.offline), skipped_total=sum(c.skipped for c in s.counts),
        already_current_total=s.already_current, rollback=rollback,
        rolled_back_total=s.rollback_ok, rollback_unconfirmed_total=s.rollback_unconfirmed,
    )
