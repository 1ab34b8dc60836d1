"""A rollout's view (what `get` answers, one page of it) from its folded state: pure, so the
live service and an audit replay in a fresh process build it the same way."""

from __future__ import annotations

from sdv_events.schemas.rollouts import DeviceProgressView, RolloutView, WaveView
from sdv_orchestrator.domain.rollout import RolloutState


def view_of(rollout_id: str, s: RolloutState, offset: int = 0, limit: int = 1000) -> RolloutView:
    """Rows [offset, offset + limit) of waves, devices and excluded."""
    assert s.created is not None
    end = offset + limit
    waves = []
    for index, count in enumerate(s.counts[offset:end], start=offset):
        if index < s.current_wave or (index == s.current_wave and s.wave_completed_at):
            wave_state = "completed"
        elif index == s.current_wave:
            wave_state = "aborted" if s.status in ("aborted", "rolled_back") else "running"
        else:
            wave_state = "waiting"
        waves.append(WaveView(index, count.size, count.succeeded, count.failed, count.pending,
                              wave_state))
    devices = sorted(s.devices)[offset:end]
    excluded = sorted(s.excluded)[offset:end]
    return RolloutView(
        rollout_id=rollout_id, app=s.created.package.name, version=s.created.package.version,
        status=s.status, target=s.created.target, strategy=s.created.strategy, waves=waves,
        devices=[DeviceProgressView(d, s.devices[d][0], s.devices[d][1]) for d in devices],
        excluded={d: s.excluded[d] for d in excluded}, current_wave=s.current_wave,
        reason=s.reason, created_at=s.created.created_at, offset=offset, limit=limit,
        waves_total=len(s.counts), devices_total=len(s.devices), excluded_total=len(s.excluded),
        succeeded_total=sum(c.succeeded for c in s.counts),
        failed_total=sum(c.failed for c in s.counts),
    )
