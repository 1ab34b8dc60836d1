"""The NATS headers each kind of message carries, as JSON Schemas (`components.schemas`).
Header names come from the code that sets them where it names them; the rest are written
where they are set (the relay, the agent's publishers, the dead-letter helper)."""

from __future__ import annotations

from typing import Any

from sdv_events.bus.actor import ACTOR_HEADER, REQUEST_INFO_HEADER
from sdv_events.bus.rpc import COMMAND_ID_HEADER, CORRELATION_HEADER
from sdv_events.enrolment import SEALED_HEADER, SEALED_SCHEME

_TRACE = {
    "traceparent": {"type": "string", "description": "W3C trace context of the sender's span."},
    "tracestate": {"type": "string", "description": "W3C trace state, when there is one."},
}


def _headers(description: str, properties: dict[str, Any], required: list[str] | None = None
             ) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "description": description,
                              "properties": properties | _TRACE}
    if required:
        schema["required"] = required
    return schema


HEADER_SCHEMAS: dict[str, dict[str, Any]] = {
    "CommandHeaders": _headers("Headers of a request (a command, an op, an announce).", {
        ACTOR_HEADER: {"type": "string",
                       "description": "Who the sender says it is (a service: `service:<name>`); "
                                      "`anonymous` when absent. Ignored for operators' requests "
                                      f"(the actor is the name in `{REQUEST_INFO_HEADER}`) and "
                                      "devices' announces; a claim `operator:…` is recorded as "
                                      "`unverified:operator:…`."},
        REQUEST_INFO_HEADER: {"type": "string",
                              "description": "Set by nats-server (never by a client: the server "
                                             "replaces it) on requests that cross into the "
                                             "account through an import with `share`: JSON "
                                             "naming the requester's account, user key and "
                                             "user JWT. An operator's actor is `operator:` + "
                                             "that JWT's `name`."},
        COMMAND_ID_HEADER: {"type": "string",
                            "description": "Idempotency key: the same id with the same request "
                                           "returns the first outcome. A fresh UUIDv7 when absent."},
        CORRELATION_HEADER: {"type": "string",
                             "description": "Correlation id for the events the command causes "
                                            "(defaults to the command id)."},
    }),
    "SealedReplyHeaders": _headers("Headers of an announce's reply.", {
        SEALED_HEADER: {"const": SEALED_SCHEME,
                        "description": "Present when the body is sealed to the announced key: "
                                       "the plaintext is the JSON reply."},
    }),
    "EventHeaders": _headers("Headers of an event on `SDV_EVENTS`.", {
        "Nats-Msg-Id": {"type": "string", "description": "JetStream dedupe id: the event id "
                                                         "(a device fact: its sealed fact id)."},
        "Sdv-Type": {"type": "string", "description": "The event type with its version."},
        "Sdv-Stream": {"type": "string", "description": "The stream id (`<category>-<entity>`)."},
        "Sdv-Version": {"type": "string", "description": "The event's version in its stream."},
    }, required=["Nats-Msg-Id", "Sdv-Type", "Sdv-Stream", "Sdv-Version"]),
    "LogHeaders": _headers("Headers of a console line on `SDV_LOGS`.", {
        "Nats-Msg-Id": {"type": "string", "description": "Dedupe id of the line."},
        "Sdv-Seq": {"type": "string", "description": "The line's sequence on the device."},
        "Sdv-Ts": {"type": "string", "description": "When the app wrote it (Unix seconds)."},
    }, required=["Nats-Msg-Id", "Sdv-Seq", "Sdv-Ts"]),
    "DeadLetterHeaders": _headers("Headers of a dead letter: the original's, plus why.", {
        "Sdv-Dlq-Reason": {"type": "string", "description": "`malformed`, `unknown_type`, "
                                                            "`missing_field`, … or `apply_failed`."},
        "Sdv-Dlq-Path": {"type": "string", "description": "JSON path of the fault."},
        "Sdv-Dlq-Detail": {"type": "string", "maxLength": 512},
        "Sdv-Dlq-Subject": {"type": "string", "description": "The original subject."},
        "Sdv-Dlq-Consumer": {"type": "string", "description": "The consumer that gave up."},
    }, required=["Sdv-Dlq-Reason", "Sdv-Dlq-Subject", "Sdv-Dlq-Consumer"]),
}


def header_ref(name: str) -> dict[str, str]:
    if name not in HEADER_SCHEMAS:
        raise KeyError(name)
    return {"$ref": f"#/components/schemas/{name}"}
