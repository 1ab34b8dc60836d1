"""Policies (pure): what a release or a new device asks for, and the policy aggregate."""

from __future__ import annotations

import pytest

from sdv_events.decider_testing import Refusal, then
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import PolicyDeleted, PolicySet, RolloutPolicy, Strategy, Target
from sdv_orchestrator.domain.policy import (
    DeletePolicy,
    SetPolicy,
    policy_decider,
    rollout_for_new_device,
    rollout_for_release,
)

POLICY = RolloutPolicy(name="prod-canary", app="speed-monitor", channel="stable",
                       target=Target(selector="env=prod"), strategy=Strategy("canary", ["1", "10%"]))
PKG = PackageInfo(name="speed-monitor", version="1.2.0", digest="a" * 64, size=1, object_name="a" * 64,
                  manifest_digest="m", signature="s", key_id="k", channel="stable", runtime="native",
                  entry_point="main.py", python_version="3.11")


def test_a_release_on_the_watched_channel_asks_for_a_rollout_with_a_derived_id() -> None:
    first = rollout_for_release(POLICY, "speed-monitor", "1.2.0", "a" * 64, "stable")
    again = rollout_for_release(POLICY, "speed-monitor", "1.2.0", "a" * 64, "stable")
    assert first is not None
    assert first == again  # a redelivered event asks for the very same rollout
    assert (first.package, first.version, first.target, first.strategy) == (
        "speed-monitor", "1.2.0", Target(selector="env=prod"), Strategy("canary", ["1", "10%"]))
    assert rollout_for_release(POLICY, "speed-monitor", "1.2.0", "b" * 64, "stable").rollout_id != first.rollout_id


@pytest.mark.parametrize(("name", "channel"), [("other-app", "stable"), ("speed-monitor", "beta")])
def test_other_apps_and_channels_are_ignored(name: str, channel: str) -> None:
    assert rollout_for_release(POLICY, name, "1.0.0", "a" * 64, channel) is None


def test_disabled_policies_do_nothing() -> None:
    import msgspec

    off = msgspec.structs.replace(POLICY, enabled=False)
    assert rollout_for_release(off, "speed-monitor", "1.2.0", "a" * 64, "stable") is None
    assert rollout_for_new_device(off, PKG, "dev-1") is None


def test_a_new_device_gets_the_fleet_version_alone_and_at_once() -> None:
    request = rollout_for_new_device(POLICY, PKG, "dev-7")
    assert request is not None
    assert request.target == Target(device_ids=["dev-7"])
    assert request.strategy.kind == "all-at-once"
    assert request.version == "1.2.0"


def test_policy_aggregate_set_is_idempotent_and_delete_needs_one() -> None:
    """given events / when command / then events (or the refusal)."""
    assert then(policy_decider, given=[], when=SetPolicy(POLICY)) == [PolicySet(POLICY)]
    assert then(policy_decider, given=[PolicySet(POLICY)], when=SetPolicy(POLICY)) == []
    assert then(policy_decider, given=[PolicySet(POLICY)], when=DeletePolicy("prod-canary")) == [
        PolicyDeleted("prod-canary")]
    assert then(policy_decider, given=[PolicySet(POLICY), PolicyDeleted("prod-canary")],
                when=DeletePolicy("prod-canary")) == Refusal("not_found", "no policy prod-canary")
    assert then(policy_decider, given=[], when=DeletePolicy("nope")) == Refusal("not_found", "no policy nope")
