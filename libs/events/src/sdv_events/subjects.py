"""Every NATS subject of the suite is built here (see DESIGN.md, "The bus")."""

from __future__ import annotations

from sdv_events.ids import split_stream_id
from sdv_events.registry import short_name


def event_subject(stream_id: str, event_type: str) -> str:
    """`rollout-42` + `orchestrator.WaveStarted.v1` → `sdv.evt.rollout.42.WaveStarted`."""
    category, entity = split_stream_id(stream_id)
    return f"sdv.evt.{category}.{entity}.{short_name(event_type)}"


def category_events(category: str) -> str:
    return f"sdv.evt.{category}.>"


def agent_fact_subject(device_id: str, event_type: str) -> str:
    return f"sdv.evt.agent.{device_id}.{short_name(event_type)}"


def command_subject(service: str, command: str) -> str:
    return f"sdv.cmd.{service}.{command}"


def dead_letter_subject(original: str) -> str:
    return f"sdv.dlq.{original}"


def heartbeat_subject(device_id: str) -> str:
    return f"sdv.hb.{device_id}"


def ops_subject(device_id: str, op: str) -> str:
    return f"sdv.device.{device_id}.ops.{op}"


def logs_subject(device_id: str, app: str, stream: str) -> str:
    return f"sdv.logs.{device_id}.{app}.{stream}"
