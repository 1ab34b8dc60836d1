"""Channels and operations of the document: a request/reply pair (commands, ops, announce) or
a channel one party publishes to (events, heartbeats, logs, KV keys)."""

from __future__ import annotations

from typing import Any

from sdv_events.asyncapi.headers import header_ref
from sdv_events.asyncapi.schemas import SchemaSet

Obj = dict[str, Any]
NATS_BINDING_VERSION = "0.1.0"


def _pointer(*tokens: str) -> Obj:
    escaped = (t.replace("~", "~0").replace("/", "~1") for t in tokens)
    return {"$ref": "#/" + "/".join(escaped)}


class ChannelSet:
    """The channels and operations built so far; a key used twice is a bug, not an overwrite."""

    def __init__(self, schemas: SchemaSet) -> None:
        self.schemas = schemas
        self.channels: dict[str, Obj] = {}
        self.operations: dict[str, Obj] = {}

    def message(self, type_: Any, *, headers: str = "CommandHeaders", **extra: Any) -> Obj:
        return {"name": self.schemas.name(type_), "headers": header_ref(headers),
                "payload": self.schemas.ref(type_), **extra}

    def add(self, key: str, channel: Obj, operation: Obj) -> None:
        if key in self.channels or key in self.operations:
            raise ValueError(f"channel {key!r} described twice")
        self.channels[key] = channel
        self.operations[key] = {"channel": _pointer("channels", key), **operation}

    def publish(self, key: str, address: str, messages: dict[str, Obj], *, party: str, tag: str,
                summary: str, parameters: Obj | None = None, stream: str | None = None) -> None:
        channel: Obj = {"address": address, "summary": summary, "messages": messages}
        if parameters:
            channel["parameters"] = parameters
        if stream:
            channel["x-sdv-jetstream"] = stream
        self.add(key, channel, {
            "action": "send", "summary": summary, "tags": [{"name": tag}], "x-sdv-party": party,
            "messages": [_pointer("channels", key, "messages", m) for m in messages],
        })


def request_reply(out: ChannelSet, key: str, address: str, request: Any, reply: Any, *, party: str,
                  tag: str, summary: str, queue: str | None = None, max_bytes: int | None = None,
                  parameters: Obj | None = None, reply_headers: str | None = None) -> None:
    """`key` is served by `party`: a request of type `request` is answered `{"status": "ok",
    "result": <reply>}` or a `CommandErrorReply`, on the requester's inbox (`key.reply`)."""
    schemas = out.schemas
    channel: Obj = {"address": address, "summary": summary,
                    "messages": {"request": out.message(request)}}
    if parameters:
        channel["parameters"] = parameters
    reply_key = f"{key}.reply"
    if reply_key in out.channels:
        raise ValueError(f"channel {reply_key!r} described twice")
    out.channels[reply_key] = {
        "address": None,
        "summary": f"The requester's inbox: the reply to {address}.",
        "messages": {"reply": {
            "name": f"{schemas.name(reply)}Reply",
            **({"headers": header_ref(reply_headers)} if reply_headers else {}),
            "payload": {"oneOf": [
                {"type": "object", "title": f"ok: {schemas.name(reply)}",
                 "properties": {"status": {"const": "ok"}, "result": schemas.ref(reply)},
                 "required": ["status"]},
                {"$ref": "#/components/schemas/ReplyError"},
            ]},
        }},
    }
    operation: Obj = {
        "action": "receive", "summary": summary, "tags": [{"name": tag}], "x-sdv-party": party,
        "messages": [_pointer("channels", key, "messages", "request")],
        "reply": {"channel": _pointer("channels", reply_key),
                  "messages": [_pointer("channels", reply_key, "messages", "reply")]},
    }
    if queue:
        operation["bindings"] = {"nats": {"queue": queue, "bindingVersion": NATS_BINDING_VERSION}}
    if max_bytes is not None:
        operation["x-sdv-max-request-bytes"] = max_bytes
    out.add(key, channel, operation)
