"""What `sdv ping` / `sdv up` make of a service's health answer."""

from __future__ import annotations

from sdv_client.health import status_of
from sdv_events.bus import ServiceUnavailable
from sdv_events.service import ServiceHealth
from sdv_events.supervision import TaskHealth


def test_a_service_whose_relay_is_stuck_is_unhealthy_with_the_reason() -> None:
    answer = ServiceHealth(
        service="orchestrator", version="1", uptime_s=12.0, relay_published=40, healthy=False,
        problems=["relay: relay stuck: 3 event(s) unpublished, the oldest for 45s"],
        tasks=[TaskHealth("relay", "running", False, reason="relay stuck")])
    status = status_of("orchestrator", answer, pid=7)
    assert status.state == "unhealthy"
    assert status.detail == "relay: relay stuck: 3 event(s) unpublished, the oldest for 45s"


def test_a_healthy_answer_is_up_and_silence_is_down() -> None:
    answer = ServiceHealth(service="registry", version="1", uptime_s=1.0, relay_published=0)
    assert status_of("registry", answer).state == "up"
    down = status_of("registry", ServiceUnavailable("nobody answered"))
    assert (down.state, down.detail) == ("down", "no subscriber")
