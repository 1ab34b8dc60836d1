"""Rollout policies (stream `policy-<name>`) and what they ask for when an event arrives. Pure."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from sdv_events.decider import Decider
from sdv_events.errors import DomainError
from sdv_events.schedules import check_schedule
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    CreateRolloutRequest,
    PolicyDeleted,
    PolicySet,
    RolloutPolicy,
    Strategy,
    Target,
)
from sdv_orchestrator.domain.planning import plan_waves

PolicyEvent = PolicySet | PolicyDeleted
# Rollout ids made by policies are derived, so a redelivered event asks for the same rollout.
_NAMESPACE = uuid.UUID("6f1c2a3e-8d4b-4c1e-9b7a-5d2f0e4c3b21")


class SetPolicy(msgspec.Struct, frozen=True):
    policy: RolloutPolicy


class DeletePolicy(msgspec.Struct, frozen=True):
    name: str


@dataclass(frozen=True)
class PolicyState:
    policy: RolloutPolicy | None = None


def decide(command: SetPolicy | DeletePolicy, state: PolicyState) -> Sequence[PolicyEvent]:
    match command:
        case SetPolicy(policy=policy):
            if not policy.target.selector and not policy.target.device_ids:
                raise DomainError("a policy needs a target selector or device ids",
                                  code="invalid_request")
            check_policy_options(policy)
            return [] if state.policy == policy else [PolicySet(policy)]
        case DeletePolicy(name=name):
            if state.policy is None:
                raise DomainError(f"no policy {name}", code="not_found")
            return [PolicyDeleted(name)]
    raise DomainError("unknown command", code="invalid_request")


def evolve(state: PolicyState, event: PolicyEvent) -> PolicyState:
    return PolicyState(event.policy if isinstance(event, PolicySet) else None)


def check_policy_options(policy: RolloutPolicy) -> None:
    """What a rollout it starts would refuse, refused when the policy is set (not when it fires,
    where nobody would see it)."""
    t, o = policy.thresholds, policy.timeouts
    if not 0 < t.success <= 1 or not 0 <= t.error < 1:
        raise DomainError("thresholds: success must be in (0, 1] and error in [0, 1)",
                          code="invalid_request")
    if o.device_s <= 0 or o.soak_s < 0:
        raise DomainError("timeouts: device_s must be > 0 and soak_s >= 0", code="invalid_request")
    plan_waves(["probe"], policy.strategy)
    check_schedule(policy.schedule)


policy_decider: Decider[SetPolicy | DeletePolicy, PolicyEvent, PolicyState] = Decider(
    PolicyState(), decide, evolve
)


def rollout_for_release(
    policy: RolloutPolicy, name: str, version: str, digest: str, channel: str
) -> CreateRolloutRequest | None:
    """The rollout a policy asks for when a package version lands on `channel`, if any."""
    if not policy.enabled or policy.app != name or policy.channel != channel:
        return None
    rollout_id = str(uuid.uuid5(_NAMESPACE, f"release:{policy.name}:{digest}:{channel}"))
    return CreateRolloutRequest(
        package=name, version=version, target=policy.target,
        strategy=policy.strategy, thresholds=policy.thresholds, timeouts=policy.timeouts,
        auto_rollback=policy.auto_rollback, rollout_id=rollout_id, offline=policy.offline,
        schedule=policy.schedule,
    )


def rollout_for_new_device(
    policy: RolloutPolicy, current: PackageInfo, device_id: str
) -> CreateRolloutRequest | None:
    """Give a newly accepted device (that the policy's target selects) the fleet's version."""
    if not policy.enabled or not policy.auto_assign or policy.app != current.name:
        return None
    rollout_id = str(uuid.uuid5(_NAMESPACE, f"assign:{policy.name}:{device_id}:{current.digest}"))
    return CreateRolloutRequest(
        package=current.name, version=current.version, target=Target(device_ids=[device_id]),
        strategy=Strategy(kind="all-at-once"), thresholds=policy.thresholds,
        timeouts=policy.timeouts, auto_rollback=policy.auto_rollback, rollout_id=rollout_id,
        offline=policy.offline, schedule=policy.schedule,
    )
