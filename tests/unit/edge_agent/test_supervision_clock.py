"""The app supervisor reads time only from the clock it is given (ports.py `Clock`): crash times
are wall-clock times, so crashes from before a reboot count while they are recent and a monotonic
clock that started again near zero plays no part."""

from __future__ import annotations

from typing import cast

from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.records import AppRecord
from sdv_edge_agent.domain.restarts import RestartPolicy
from sdv_edge_agent.ports import AppHost
from sdv_edge_agent.supervision import outcomes
from sdv_edge_agent.supervision.core import AppCore
from sdv_events.schemas.agent import AppFact, AppFailed, DesiredRefused
from sdv_events.schemas.deployment import DesiredApp
from sdv_events.schemas.packages import PackageInfo

NOW = 1_800_000_000.0
PACKAGE = PackageInfo(
    name="app", version="1.0.0", digest="1" * 64, size=1, object_name="o", manifest_digest="m",
    signature="s", key_id="k", channel="dev", runtime="native", entry_point="main.py",
    python_version="3.11",
)


class AfterReboot:
    """A wall clock at NOW and a monotonic clock that started again a minute ago."""

    def monotonic(self) -> float:
        return 60.0

    def wall(self) -> float:
        return NOW


class Facts:
    def __init__(self) -> None:
        self.emitted: list[AppFact | DesiredRefused] = []

    def emit(self, fact: AppFact | DesiredRefused, run: int | None = None) -> bool:
        self.emitted.append(fact)
        return True


class Host:
    """Only what a crash touches of the agent: the restart policy, the store and the facts."""

    device_id = "car-1"
    revision = 1
    restart_policy = RestartPolicy(loop_crashes=5, window_s=120.0)

    def __init__(self) -> None:
        self.facts = Facts()
        self.store = self

    def save_app(self, record: AppRecord) -> None:
        pass

    def changed(self) -> None:
        pass

    def desired_app(self, name: str) -> DesiredApp | None:
        return None

    def desired_rollout(self, name: str) -> str | None:
        return None


def running_app(crashes: tuple[float, ...]) -> tuple[AppCore, Facts]:
    host = Host()
    record = AppRecord(name="app", state=AppState.RUNNING, package=PACKAGE, crashes=crashes, runs=1)
    return AppCore(cast(AppHost, host), record, AfterReboot()), host.facts


async def test_crashes_from_just_before_a_reboot_make_a_crash_loop_by_the_wall_clock() -> None:
    app, facts = running_app((NOW - 40, NOW - 30, NOW - 20, NOW - 10))
    await outcomes.crashed(app, PACKAGE, "exited with status 1", healthy=True, run=1)
    assert app.record.state is AppState.FAILED
    assert app.record.crashes == (NOW - 40, NOW - 30, NOW - 20, NOW - 10, NOW)
    assert [type(fact) for fact in facts.emitted] == [AppFailed]


async def test_crashes_long_before_a_reboot_do_not_count_and_the_app_restarts() -> None:
    app, facts = running_app((NOW - 3600, NOW - 3590, NOW - 3580, NOW - 3570))
    await outcomes.crashed(app, PACKAGE, "exited with status 1", healthy=True, run=1)
    assert app.record.state is AppState.STARTING
    assert app.record.crashes == (NOW,)
    assert app.restart_pending
    assert facts.emitted == []
