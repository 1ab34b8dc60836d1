"""Stable identities of device facts (the Nats-Msg-Id dedupe key and the event id)."""

from __future__ import annotations

from sdv_edge_agent.domain.facts import fact_event_id, fact_msg_id

DIGEST = "ab" * 32


def test_same_fact_same_id_and_each_field_matters() -> None:
    base = fact_msg_id("car-1", "speed-monitor", DIGEST, 7, "agent.AppStarted.v1")
    assert base == f"car-1:speed-monitor:{DIGEST[:16]}:7:AppStarted"
    assert base == fact_msg_id("car-1", "speed-monitor", DIGEST, 7, "agent.AppStarted.v1")
    others = {
        fact_msg_id("car-2", "speed-monitor", DIGEST, 7, "agent.AppStarted.v1"),
        fact_msg_id("car-1", "other", DIGEST, 7, "agent.AppStarted.v1"),
        fact_msg_id("car-1", "speed-monitor", "cd" * 32, 7, "agent.AppStarted.v1"),
        fact_msg_id("car-1", "speed-monitor", DIGEST, 8, "agent.AppStarted.v1"),
        fact_msg_id("car-1", "speed-monitor", DIGEST, 7, "agent.AppHealthy.v1"),
        fact_msg_id("car-1", "speed-monitor", DIGEST, 7, "agent.AppStarted.v1", occurrence=1),
    }
    assert base not in others
    assert len(others) == 6


def test_event_id_is_derived_from_the_msg_id() -> None:
    msg_id = fact_msg_id("car-1", "a", DIGEST, 1, "agent.AppInstalled.v1")
    assert fact_event_id(msg_id) == fact_event_id(msg_id)
    assert fact_event_id(msg_id) != fact_event_id(msg_id + ":1")
    assert fact_event_id(msg_id).version == 5
