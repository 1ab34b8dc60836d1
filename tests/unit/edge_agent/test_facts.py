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


def test_a_runs_facts_are_identified_by_the_run_never_by_a_count_of_reports() -> None:
    """The same run reports its start or health under one id however often it is said (an agent
    restart re-adopting it says it again: the stream drops it); another run is another fact, and
    a run number never meets an occurrence count."""
    run = fact_msg_id("car-1", "a", DIGEST, 7, "agent.AppHealthy.v1", run=3)
    assert run == f"car-1:a:{DIGEST[:16]}:7:AppHealthy:run3"
    assert run == fact_msg_id("car-1", "a", DIGEST, 7, "agent.AppHealthy.v1", occurrence=5, run=3)
    assert run != fact_msg_id("car-1", "a", DIGEST, 7, "agent.AppHealthy.v1", run=4)
    assert run != fact_msg_id("car-1", "a", DIGEST, 7, "agent.AppHealthy.v1", occurrence=3)


def test_event_id_is_derived_from_the_msg_id() -> None:
    msg_id = fact_msg_id("car-1", "a", DIGEST, 1, "agent.AppInstalled.v1")
    assert fact_event_id(msg_id) == fact_event_id(msg_id)
    assert fact_event_id(msg_id) != fact_event_id(msg_id + ":1")
    assert fact_event_id(msg_id).version == 5


def test_sealed_ids_are_stable_on_this_device_and_unpredictable_without_its_secret() -> None:
    from sdv_edge_agent.domain.facts import IdSealer

    mine = IdSealer("car-1", b"k" * 32)
    fact = mine.fact_id("a", DIGEST, 1, "agent.AppHealthy.v1")
    assert fact == IdSealer("car-1", b"k" * 32).fact_id("a", DIGEST, 1, "agent.AppHealthy.v1")
    assert fact.startswith("car-1:")
    assert fact != IdSealer("car-1", b"x" * 32).fact_id("a", DIGEST, 1, "agent.AppHealthy.v1")
    assert fact != fact_msg_id("car-1", "a", DIGEST, 1, "agent.AppHealthy.v1")
    assert mine.log_id(7) == mine.log_id(7) != mine.log_id(8)
    assert mine.log_id(7) != IdSealer("car-1", b"x" * 32).log_id(7)


def test_a_short_secret_is_refused() -> None:
    import pytest

    from sdv_edge_agent.domain.facts import IdSealer

    with pytest.raises(ValueError, match="32 bytes"):
        IdSealer("car-1", b"short")


def test_the_secret_is_made_once_owner_only_and_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sdv_edge_agent.adapters.id_secret import SECRET_FILE, load_or_create_secret

    first = load_or_create_secret(tmp_path)
    assert len(first) == 32
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(tmp_path) == first
