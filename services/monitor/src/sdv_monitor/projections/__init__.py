"""The monitor's read models (PostgreSQL, fed by the shared consumer runner, rebuildable from
the services' stores): fleet, software inventory, rollouts, packages, per-device history.

They are parts of one projection (`MonitorViews`): one consumer reads every category once and
each part keeps its own tables, all written in the runner's transaction with the checkpoint."""

from sdv_monitor.projections.views import MonitorViews

__all__ = ["MonitorViews"]
