"""The ticker ticks every active rollout on its own: one that cannot be ticked does not stop the
others, and it shows in health until it can be ticked again (or is no longer active)."""

from __future__ import annotations

from sdv_events.errors import UpgradeNeeded
from sdv_orchestrator.adapters.ticker import Ticker


class Rollouts:
    def __init__(self, active: list[str], broken: set[str]) -> None:
        self.active_ids = active
        self.broken = broken
        self.ticked: list[str] = []

    async def active(self) -> list[str]:
        return list(self.active_ids)

    async def tick(self, rollout_id: str, facts_until: object) -> None:
        if rollout_id in self.broken:
            raise UpgradeNeeded(f"rollout-{rollout_id}", "orchestrator.RolloutPaused.v9")
        self.ticked.append(rollout_id)


async def no_watermark() -> None:
    return None


async def test_a_rollout_that_cannot_be_ticked_does_not_stop_the_others_and_shows_in_health() -> None:
    rollouts = Rollouts(["a", "b", "c"], broken={"a"})
    ticker = Ticker(rollouts.active, rollouts.tick, watermark=no_watermark)
    await ticker.round()
    assert rollouts.ticked == ["b", "c"]
    status = await ticker.status()
    assert not status.healthy
    assert status.reason.startswith("rollout a cannot be ticked: UpgradeNeeded")
    assert status.detail["errors"] == 1

    rollouts.broken.clear()  # upgraded
    await ticker.round()
    assert rollouts.ticked == ["b", "c", "a", "b", "c"]
    assert (await ticker.status()).healthy


async def test_a_failing_rollout_that_ended_no_longer_counts() -> None:
    rollouts = Rollouts(["a", "b"], broken={"a"})
    ticker = Ticker(rollouts.active, rollouts.tick, watermark=no_watermark)
    await ticker.round()
    assert not (await ticker.status()).healthy
    rollouts.active_ids = ["b"]
    await ticker.round()
    assert (await ticker.status()).healthy
