"""Alert rules, pure: from a snapshot of the fleet (rows the adapter read) and the time, the
conditions that hold now; from those and the open alerts, what to raise and what to resolve.
An alert resolves by itself when its condition no longer holds."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sdv_events.schemas.monitor import Severity


@dataclass(frozen=True)
class Thresholds:
    offline_after_s: float = 300.0  # an accepted device silent this long
    crash_restarts: int = 3  # restarts of one app (as its agent reports them) that make a crash loop


@dataclass(frozen=True)
class Condition:
    key: str  # the stream entity: one stream per condition, `alert-<key>`
    kind: str
    subject: str
    severity: Severity
    message: str
    device_id: str | None = None
    rollout_id: str | None = None


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    online: bool
    last_seen_at: datetime | None
    kuksa_expected: bool = False


@dataclass(frozen=True)
class AppRow:
    device_id: str
    app: str
    state: str
    last_error: str | None
    restarts: int | None
    reported_state: str | None


@dataclass(frozen=True)
class RolloutRow:
    rollout_id: str
    app: str
    status: str
    reason: str


@dataclass(frozen=True)
class Snapshot:
    devices: list[DeviceRow] = field(default_factory=list)
    apps: list[AppRow] = field(default_factory=list)
    # Rollouts that failed with no later completed rollout of their app.
    failed_rollouts: list[RolloutRow] = field(default_factory=list)
    services: Mapping[str, list[str]] = field(default_factory=dict)  # service → its problems
    # Devices whose heartbeat says their KUKSA databroker is not reachable.
    databroker_missing: Iterable[str] = ()


_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def condition_key(kind: str, *parts: str) -> str:
    """A stream-id-safe key per condition; a hash keeps names with other characters apart."""
    raw = "/".join(parts)
    safe = _SAFE.sub("_", raw)[:80]
    if safe != raw:
        safe += "-" + hashlib.sha256(raw.encode()).hexdigest()[:10]
    return f"{kind}-{safe}"


def conditions(snapshot: Snapshot, thresholds: Thresholds, now: datetime) -> dict[str, Condition]:
    found: list[Condition] = []
    silent_since = now - timedelta(seconds=thresholds.offline_after_s)
    for d in snapshot.devices:
        if not d.online and d.last_seen_at is not None and d.last_seen_at <= silent_since:
            minutes = (now - d.last_seen_at).total_seconds() / 60
            found.append(Condition(condition_key("device_offline", d.device_id), "device_offline",
                                   d.device_id, "warning",
                                   f"{d.device_id} offline for {minutes:.0f} min", device_id=d.device_id))
    for device_id in snapshot.databroker_missing:
        found.append(Condition(condition_key("databroker_unreachable", device_id), "databroker_unreachable",
                               device_id, "warning",
                               f"{device_id}: its KUKSA databroker cannot be reached", device_id=device_id))
    for a in snapshot.apps:
        subject = f"{a.device_id}/{a.app}"
        if a.state == "FAILED":
            found.append(Condition(condition_key("app_failed", a.device_id, a.app), "app_failed", subject,
                                   "critical", f"{a.app} FAILED on {a.device_id}: {a.last_error or '?'}",
                                   device_id=a.device_id))
        if (a.restarts or 0) >= thresholds.crash_restarts and not (
                a.state == "RUNNING" and a.reported_state == "RUNNING"):
            found.append(Condition(condition_key("app_crash_loop", a.device_id, a.app), "app_crash_loop",
                                   subject, "critical",
                                   f"{a.app} on {a.device_id} restarted {a.restarts} times",
                                   device_id=a.device_id))
    for r in snapshot.failed_rollouts:
        found.append(Condition(condition_key("rollout_failed", r.rollout_id), "rollout_failed", r.rollout_id,
                               "critical", f"rollout {r.rollout_id} of {r.app} {r.status}: {r.reason}",
                               rollout_id=r.rollout_id))
    for service, problems in snapshot.services.items():
        if problems:
            found.append(Condition(condition_key("service_unhealthy", service), "service_unhealthy", service,
                                   "critical", f"{service}: " + "; ".join(problems)[:400]))
    return {c.key: c for c in found}


@dataclass(frozen=True)
class Decision:
    raise_: list[Condition]
    resolve: list[str]  # keys whose open alert no longer holds


def decide(open_keys: Iterable[str], now_holding: Mapping[str, Condition]) -> Decision:
    open_set = set(open_keys)
    return Decision(raise_=[c for k, c in sorted(now_holding.items()) if k not in open_set],
                    resolve=sorted(open_set - now_holding.keys()))
