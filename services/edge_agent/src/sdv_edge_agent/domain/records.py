"""The agent's record of one app: what is installed and active, what ran before, how it fares.

Plain data, persisted by the store and turned into the reconcile view with `local_view`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sdv_edge_agent.domain.activation import ActivationKey
from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.reconcile import LocalApp
from sdv_events.schemas.deployment import RunState
from sdv_events.schemas.packages import PackageInfo


@dataclass
class AppRecord:
    name: str
    state: AppState | None = None
    package: PackageInfo | None = None  # the active version
    previous: PackageInfo | None = None  # kept installed for rollback
    attempt: PackageInfo | None = None  # being installed, or failed to install (nothing active)
    config: dict[str, str] = field(default_factory=dict)
    # The cause its facts carry (domain/attribution.py): the rollout and desired revision of the
    # entry the supervisor last acted on.
    rollout_id: str | None = None
    revision: int = 0
    healthy: bool = False
    healthy_at: float | None = None  # wall clock: when the running instance became healthy
    # True from an upgrade until the new version is first healthy: failing then means rollback.
    on_trial: bool = False
    restarts: int = 0
    crashes: tuple[float, ...] = ()  # wall-clock times (domain/restarts.py)
    runs: int = 0  # processes started so far: a run's facts are identified by its number
    last_error: str | None = None
    failed_digest: str | None = None
    failed_rollout: str | None = None
    held: RunState | None = None
    pid: int | None = None
    pid_started: float | None = None  # the process's start time: a reused pid is not ours
    started_at: float | None = None  # wall clock
    # A hot-swap candidate (pid, start time): killed if the agent restarts mid-swap.
    candidate: tuple[int, float] | None = None
    # Downloaded, verified and installed beside the active version, waiting for its activation
    # (domain/activation.py); and the deferral reported last for it (`deferral_mark`).
    staged: PackageInfo | None = None
    deferred: str | None = None

    @property
    def digest(self) -> str | None:
        return self.package.digest if self.package else None

    @property
    def cause(self) -> tuple[str | None, int]:
        return self.rollout_id, self.revision

    @property
    def shown(self) -> PackageInfo | None:
        """The version to report: the active one, else the one being (or failing to be) installed."""
        return self.package or self.attempt

    def local_view(self, alive: bool, released: ActivationKey | None = None) -> LocalApp:
        return LocalApp(
            name=self.name, state=self.state, digest=self.digest, alive=alive,
            failed_digest=self.failed_digest, failed_rollout=self.failed_rollout, held=self.held,
            staged=self.staged.digest if self.staged else None, released=released,
        )
