"""The monitor's own events: device facts it received, recorded in its event store.

Agents publish facts straight to JetStream (`sdv.evt.agent.<device>.<Type>`); no vehicle keeps
them for us. The monitor records each one it receives, once, as `DeviceFactRecorded` in stream
`facts-<device_id>` of its own store, so that the audit trail, the hash chains and every rebuild
of the fleet's read models have the devices' side of the story too — from PostgreSQL, not from
a stream whose retention may already have dropped it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from sdv_events.registry import event
from sdv_events.schemas.devices import DeviceId
from sdv_events.schemas.heartbeat import DeviceMetrics
from sdv_events.schemas.rollouts import Thresholds, Timeouts
from sdv_events.schemas.scheduling import Schedule

# A fact bigger than this is recorded without its body (a device may publish whatever it likes;
# one hostile fact must not make the recording fail forever).
MAX_RECORDED_FACT_BYTES = 16 * 1024
FACTS_CATEGORY = "facts"


@event("monitor.DeviceFactRecorded")
class DeviceFactRecorded(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str  # from the subject the device published on (NATS permissions vouch for it)
    fact_id: uuid.UUID  # the fact envelope's event id
    fact_type: str  # e.g. `agent.AppHealthy.v1`
    occurred_at: datetime  # when the device says it happened
    data: dict[str, Any] = {}  # the fact's body, as the device sent it
    oversized_bytes: int = 0  # set (and `data` left empty) when the body was too large to keep


# --- what the monitor serves (NATS queries `sdv.cmd.monitor.*` and its HTTP API) -------------
# Bounded, validated requests: a query names at most a page.

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]


class FleetDevice(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    status: str  # preauthorized | pending | accepted | rejected | decommissioned
    online: bool
    last_seen_at: datetime | None = None
    labels: dict[str, str] = {}
    agent_version: str | None = None
    arch: str | None = None
    hardware_type: str | None = None
    admitted_by: str | None = None
    apps: int = 0
    apps_failed: int = 0
    updated_at: datetime


class DeviceApp(msgspec.Struct, frozen=True, kw_only=True):
    app: str
    desired_version: str | None = None
    desired_rollout: str | None = None
    installed_version: str | None = None
    state: str  # the agent's lifecycle state, PENDING before the device said anything
    healthy: bool = False
    last_error: str | None = None
    since: datetime
    restarts: int | None = None  # from the agent's reported state (None: not reported)
    reported_state: str | None = None
    pid: int | None = None
    # From the agent's latest heartbeat (None: none since the monitor started).
    cpu_pct: float | None = None
    rss_bytes: int | None = None
    uptime_s: float | None = None


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    source: str  # registry | orchestrator | device
    type: str
    summary: str
    app: str | None = None
    rollout_id: str | None = None


class DeviceDetail(msgspec.Struct, frozen=True, kw_only=True):
    device: FleetDevice
    capabilities: dict[str, Any] | None = None
    apps: list[DeviceApp] = []
    history: list[HistoryEntry] = []
    # The agent's latest heartbeat: the device's load and its KUKSA databroker (None: unknown).
    heartbeat_at: datetime | None = None
    metrics: DeviceMetrics | None = None
    databroker: str | None = None


class DevicePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[FleetDevice]
    total: int
    offset: int
    limit: int


class RolloutRow(msgspec.Struct, frozen=True, kw_only=True):
    rollout_id: str
    app: str
    version: str
    status: str
    created_by: str = ""
    target: str = ""
    strategy: str = ""
    devices: int = 0
    waves: int = 0
    current_wave: int = -1
    excluded: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    reason: str = ""
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    # After a rollback: devices back on their previous version, devices that did not confirm it,
    # and when every device was accounted for.
    rolled_back: int = 0
    rollback_unconfirmed: int = 0
    rollback_completed_at: datetime | None = None
    # status "waiting": for what ("its start time", "a maintenance window") and until when.
    waiting_reason: str = ""
    waiting_until: datetime | None = None


class RolloutWave(msgspec.Struct, frozen=True, kw_only=True):
    wave: int
    size: int
    state: str
    succeeded: int
    failed: int
    started_at: datetime | None = None
    completed_at: datetime | None = None


class RolloutDevice(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    wave: int
    # planned | targeted | staged (downloaded, waiting to switch) | deferred (a gate does not
    # hold) | held (until `sdv rollout activate`) | succeeded | failed | timed_out | offline
    # (waiting for it, or failed for it) | skipped (offline, not counted) | rolled_back |
    # rollback_unconfirmed
    status: str
    targeted_at: datetime | None = None
    deadline: datetime | None = None
    finished_at: datetime | None = None
    reason: str = ""


class ExcludedDeviceRow(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    reason: str


class RolloutDetail(msgspec.Struct, frozen=True, kw_only=True):
    rollout: RolloutRow
    # As the rollout was created (None: its creation is not in the audit trail yet).
    thresholds: Thresholds | None = None
    timeouts: Timeouts | None = None
    auto_rollback: bool | None = None
    # Windows, rate, start time, activation gates and hold (#15), as the rollout was created.
    schedule: Schedule | None = None
    # How many of its devices are in each status (`RolloutDevice.status`), all pages together.
    statuses: dict[str, int] = {}
    waves: list[RolloutWave] = []
    devices: list[RolloutDevice] = []
    devices_total: int = 0
    excluded: list[ExcludedDeviceRow] = []
    offset: int = 0
    limit: int = 0


class RolloutPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[RolloutRow]
    total: int
    offset: int
    limit: int


class PackageRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    digest: str
    channel: str
    runtime: str
    size: int
    yanked: bool
    yank_reason: str | None = None
    published_at: datetime
    installed_on: int = 0  # devices whose agent said it installed this version
    desired_on: int = 0  # devices a rollout assigned this version to


class PackagePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[PackageRow]
    total: int
    offset: int
    limit: int


class AppVersionRow(msgspec.Struct, frozen=True, kw_only=True):
    """One version of one app across the fleet."""

    app: str
    version: str
    installed: int = 0  # devices whose agent said it installed this version
    running: int = 0  # of those, running now
    desired: int = 0  # devices a rollout (or a rollback) assigned this version to
    failed: int = 0  # of those, where the app is FAILED


class AppVersions(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AppVersionRow]


class FleetStatus(msgspec.Struct, frozen=True, kw_only=True):
    devices: int
    online: int
    by_status: dict[str, int] = {}
    apps_by_state: dict[str, int] = {}
    active_rollouts: list[RolloutRow] = []
    open_alerts: dict[str, int] = {}  # severity → alerts not yet resolved


class GetDeviceInventory(msgspec.Struct, frozen=True, kw_only=True):
    device_id: DeviceId
    history_limit: Limit = 50


class ListFleet(msgspec.Struct, frozen=True, kw_only=True):
    status: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    online: bool | None = None
    app: Id | None = None
    limit: Limit = 100
    offset: Offset = 0


class GetFleetStatus(msgspec.Struct, frozen=True, kw_only=True):
    pass


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    event_id: uuid.UUID
    at: datetime  # when it happened (a device fact: when the device says it did)
    service: str  # whose store holds it: packager | registry | orchestrator | device
    stream_id: str
    version: int
    type: str
    actor: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    device_id: str | None = None
    rollout_id: str | None = None
    package: str | None = None
    data: Any = None


AuditText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class AuditQuery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Filters combine (AND). Oldest first; page on with `after` = the last page's `next_after`."""

    rollout: Id | None = None
    device: DeviceId | None = None
    package: Id | None = None
    stream: Id | None = None
    correlation: AuditText | None = None
    actor: AuditText | None = None
    type: AuditText | None = None  # `AppHealthy` or a full type `agent.AppHealthy.v1`
    since: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    until: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    after: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    limit: Limit = 100


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AuditEvent]
    next_after: str | None = None  # set when more may follow


# --- alerts: events of the monitor's own store, stream `alert-<key>` (one per condition) --------

ALERT_CATEGORY = "alert"
Severity = Literal["warning", "critical"]


@event("monitor.AlertRaised")
class AlertRaised(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: str  # `<stream entity>.<n>`: the n-th time this condition held
    kind: str  # device_offline | app_failed | app_crash_loop | rollout_failed | service_unhealthy
    subject: str  # what it is about: a device, `device/app`, a rollout, a service
    severity: Severity
    message: str
    device_id: str | None = None
    rollout_id: str | None = None


@event("monitor.AlertAcknowledged")
class AlertAcknowledged(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: str
    note: str = ""


@event("monitor.AlertResolved")
class AlertResolved(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: str
    reason: str  # why: the condition cleared (and how), or an operator closed it


class AlertView(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: str
    kind: str
    subject: str
    severity: str
    state: str  # open | acknowledged | resolved
    message: str
    device_id: str | None = None
    rollout_id: str | None = None
    raised_at: datetime
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    resolution: str | None = None


class ListAlerts(msgspec.Struct, frozen=True, kw_only=True):
    state: Literal["open", "acknowledged", "resolved", "active", "all"] = "active"
    kind: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    device: DeviceId | None = None
    limit: Limit = 100
    offset: Offset = 0


class AlertPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AlertView]
    total: int
    offset: int
    limit: int


class AcknowledgeAlert(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")]
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""
