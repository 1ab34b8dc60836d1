"""The bus contract as an AsyncAPI 3.0 document, built from the code's own registries: the
commands `register_command` recorded (request type, reply type from the handler's annotation),
the event registry (body per type and version), the subjects of `sdv_events.subjects`, the KV
buckets of `provisioning`, the device ops table. Pure: it returns a dict.

AsyncAPI 3.0 rather than 2.6 because commands are request/reply and 3.0 says so (an operation
with a `reply`), where 2.6 has only publish/subscribe.

One document describes the whole bus, so each operation is written from the side of the party
that owns the channel — the service or agent serving a request (`receive`, with its `reply`),
the writer of an event, a key or a log line (`send`) — and `x-sdv-party` names that party.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdv_events.asyncapi import REGENERATE
from sdv_events.asyncapi.channels import ChannelSet, request_reply
from sdv_events.asyncapi.event_channels import AGENT_CATEGORY, EventChannel, event_channels
from sdv_events.asyncapi.headers import HEADER_SCHEMAS, header_ref
from sdv_events.asyncapi.schemas import SchemaSet
from sdv_events.auth.permissions import ANNOUNCE_PREFIX
from sdv_events.bus.routes import CommandSpec
from sdv_events.bus.rpc import ReplyError
from sdv_events.codec import WireEnvelope
from sdv_events.provisioning import (
    DESIRED_BUCKET,
    DLQ_STREAM,
    EVENTS_STREAM,
    LOGS_STREAM,
    PACKAGES_BUCKET,
    REPORTED_BUCKET,
    UPLOADS_BUCKET,
)
from sdv_events.registry import EventRegistry, default_registry
from sdv_events.schemas.deployment import DesiredState, ReportedState
from sdv_events.schemas.device_ops import OP_TYPES
from sdv_events.schemas.devices import Announce, AnnounceReply
from sdv_events.schemas.heartbeat import Heartbeat
from sdv_events.stream_owners import STREAM_OWNERS

ASYNCAPI_VERSION = "3.0.0"
DEVICE_ID = {"device_id": {"description": "The device id."}}
DESCRIPTION = f"""\
Every message of SDV Fleet on NATS: commands to services, domain events and devices' facts,
devices' heartbeats, ops and console output, and the KV buckets of desired and reported state.
Generated from the code (`sdv_events.asyncapi`); regenerate with `{REGENERATE}`.

- **Commands** (`sdv.cmd.<service>.<command>`) are NATS requests whose body is the request as
  JSON; the reply is `{{"status": "ok", "result": …}}` or `{{"status": "error", "code", "message",
  "details"}}` (`ReplyError`). A service serves its commands in the queue group
  `sdv-<service>`. A request over its `x-sdv-max-request-bytes`, nested too deep, malformed or of
  the wrong shape is answered `invalid_request` with the reason and the JSON path.
- **Events** travel in an envelope (`WireEnvelope`) whose `type` names the body's type and
  version; `data` is the body. Each service's events are stored first in its own PostgreSQL
  store (the truth) and relayed to JetStream `{EVENTS_STREAM}`; devices' facts (`sdv.evt.agent.…`)
  come straight from their agents.
- Every message carries W3C trace context (`traceparent`) in its headers.
- Object stores (not channels): `{PACKAGES_BUCKET}` holds signed package artifacts by digest
  (written by the packager, read by agents); `{UPLOADS_BUCKET}` holds operators' raw uploads
  awaiting publish.
"""


def build_document(commands: Mapping[str, CommandSpec], *, version: str,
                   registry: EventRegistry = default_registry) -> dict[str, Any]:
    """The AsyncAPI document of `commands` (subject → spec, as `registered_commands()` gives
    them), the events of `registry` and the fixed channels of the suite."""
    events = list(event_channels(registry))
    schemas = SchemaSet(_types(commands, events))
    out = ChannelSet(schemas)
    for subject, spec in sorted(commands.items()):
        _, _, service, name = subject.split(".", 3)
        request_reply(out, subject, subject, spec.request_type, spec.reply_type, party=service,
                      queue=f"sdv-{service}", max_bytes=spec.max_bytes, tag=service,
                      summary=f"`{name}` of the {service} service.")
    for op, (request, reply) in sorted(OP_TYPES.items()):
        request_reply(out, f"sdv.device.ops.{op}", f"sdv.device.{{device_id}}.ops.{op}", request, reply,
                      party="edge_agent", parameters=DEVICE_ID, tag="device-ops",
                      summary=f"Op `{op}` on one app of one device, served by its agent.")
    request_reply(out, ANNOUNCE_PREFIX, f"{ANNOUNCE_PREFIX}.{{device_id}}", Announce, AnnounceReply,
                  party="registry", queue="sdv-registry", parameters=DEVICE_ID, tag="enrolment",
                  reply_headers="SealedReplyHeaders",
                  summary="A device introduces itself (two rounds: challenge, then signed). The "
                          "reply is sealed to the announced key (`Sdv-Sealed`) whenever that key "
                          "is well formed; the plaintext is the JSON reply shown.")
    for channel in events:
        _event(out, schemas, channel)
    _device_channels(out, schemas)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": "SDV Fleet bus", "version": version, "description": DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": "localhost:4222", "protocol": "nats",
                             "description": "The suite's NATS server with JetStream "
                                            "(`SDV_NATS_URL`; TLS and credentials under `sdv up`)."}},
        "channels": dict(sorted(out.channels.items())),
        "operations": dict(sorted(out.operations.items())),
        "components": {"schemas": dict(sorted((schemas.components | HEADER_SCHEMAS).items()))},
    }


def _types(commands: Mapping[str, CommandSpec], events: list[EventChannel]) -> list[Any]:
    types: list[Any] = [WireEnvelope, ReplyError, Heartbeat, DesiredState, ReportedState,
                        Announce, AnnounceReply]
    for spec in commands.values():
        types += [spec.request_type, spec.reply_type]
    for request, reply in OP_TYPES.values():
        types += [request, reply]
    for channel in events:
        types += [cls for _, _, cls in channel.versions]
    return types


def _event(out: ChannelSet, schemas: SchemaSet, channel: EventChannel) -> None:
    key = f"sdv.evt.{channel.category}.{channel.name}"
    param, about = channel.parameter
    messages = {}
    for full, version, cls in channel.versions:
        messages[full] = {
            "name": full, "title": schemas.name(cls), "headers": header_ref("EventHeaders"),
            "payload": {"allOf": [
                {"$ref": "#/components/schemas/WireEnvelope"},
                {"type": "object", "properties": {
                    "type": {"const": full}, "schema_version": {"const": version},
                    "data": schemas.ref(cls)}},
            ]},
        }
    party = "edge_agent" if channel.category == AGENT_CATEGORY else STREAM_OWNERS[channel.category]
    out.publish(key, channel.address, messages, party=party, parameters={param: {"description": about}},
                tag=f"events:{channel.category}", stream=EVENTS_STREAM,
                summary=f"`{channel.name}` events of `{channel.category}` streams.")


def _device_channels(out: ChannelSet, schemas: SchemaSet) -> None:
    """Heartbeats, console lines, dead letters and the per-device KV keys."""
    out.publish("sdv.hb", "sdv.hb.{device_id}", {"Heartbeat": out.message(Heartbeat)},
                party="edge_agent", parameters=DEVICE_ID, tag="devices",
                summary="A device's heartbeat every few seconds (core NATS, not stored): the "
                        "registry turns its gaps into presence events, the monitor reads its metrics.")
    out.publish("sdv.logs", "sdv.logs.{device_id}.{app}.{stream}", {"ConsoleLine": {
        "name": "ConsoleLine", "contentType": "text/plain", "headers": header_ref("LogHeaders"),
        "payload": {"type": "string", "description": "One line of the app's output, as text."},
    }}, party="edge_agent", stream=LOGS_STREAM, tag="devices",
        parameters=DEVICE_ID | {"app": {"description": "The app's name."},
                                "stream": {"enum": ["stdout", "stderr"]}},
        summary="Console output of a vehicle app, one line a message (bounded by size and age).")
    out.publish("sdv.dlq", "sdv.dlq.{subject}", {"DeadLetter": {
        "name": "DeadLetter", "contentType": "application/octet-stream",
        "headers": header_ref("DeadLetterHeaders"),
        "payload": {"description": "The original message's body, unchanged."},
    }}, party="any consumer", stream=DLQ_STREAM, tag="dead-letters",
        parameters={"subject": {"description": "The original subject (all its tokens)."}},
        summary="A message no consumer could decode, or whose handling kept failing.")
    for bucket, body, party, about in (
        (DESIRED_BUCKET, DesiredState, "orchestrator",
         "A device's desired state, written by the orchestrator, watched by that device's agent."),
        (REPORTED_BUCKET, ReportedState, "edge_agent",
         "What runs on a device, written by its agent."),
    ):
        out.publish(f"kv.{bucket}", f"$KV.{bucket}.{{device_id}}",
                    {schemas.name(body): out.message(body)}, party=party, parameters=DEVICE_ID,
                    tag="kv", summary=f"KV bucket `{bucket}`, key `<device_id>`: {about}",
                    stream=f"KV_{bucket}")
