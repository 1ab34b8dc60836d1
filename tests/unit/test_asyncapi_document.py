"""The bus contract (issue #12, point 4): `docs/asyncapi.json` is generated from the code
(commands with their real request and reply types, events by subject, KV buckets, logs), is a
valid AsyncAPI 3.0 document, and a test fails when the committed copy is out of date.

The AsyncAPI JSON schema is vendored: tests/data/asyncapi/README.md says from where."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from faststream.nats import NatsRouter

from sdv_events.asyncapi import shipped_document
from sdv_events.asyncapi.event_channels import UnmappedEventType, category_of
from sdv_events.bus import RequestInfo
from sdv_events.bus.routes import register_command
from sdv_events.registry import default_registry
from sdv_events.schemas.rollouts import RolloutRef, WaveStarted
from sdv_events.stream_owners import STREAM_OWNERS

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "asyncapi.py"
DOCS = ROOT / "docs" / "asyncapi.json"
SCHEMA = ROOT / "tests" / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json"


def suite_event_types() -> list[str]:
    """The registered types of the suite's schemas (test modules register their own too)."""
    found = []
    for name in default_registry.names():
        resolved = default_registry.resolve(name)
        if resolved is not None and resolved[0].__module__.startswith("sdv_events.schemas."):
            found.append(name)
    return found


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(DOCS.read_text())


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=110)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for token in ref[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def test_the_committed_asyncapi_document_is_the_one_the_code_generates() -> None:
    result = run_tool("--check")
    assert result.returncode == 0, result.stderr
    assert shipped_document() == DOCS.read_bytes()  # the copy the monitor serves


def test_a_stale_asyncapi_document_fails_the_check_and_says_how_to_regenerate(tmp_path: Path) -> None:
    stale = tmp_path / "asyncapi.json"
    stale.write_text(DOCS.read_text().replace('"WaveStarted"', '"WaveBegun"'))
    result = run_tool("--check", "--target", str(stale))
    assert result.returncode == 1
    assert f"{stale} is out of date" in result.stderr
    assert "./dev asyncapi" in result.stderr


def test_the_asyncapi_document_validates_against_the_asyncapi_3_schema(doc: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert errors == []


def test_the_vendored_schema_rejects_what_asyncapi_forbids(doc: dict[str, Any]) -> None:
    """A validator that passes anything would prove nothing: an operation with an action that
    is neither send nor receive, and a channel with an unknown field, are refused."""
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    broken = json.loads(json.dumps(doc))
    broken["operations"]["sdv.cmd.orchestrator.create"]["action"] = "serve"
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(doc))
    broken["channels"]["sdv.hb"]["payload"] = {}
    assert not validator.is_valid(broken)


def test_every_reference_in_the_asyncapi_document_resolves(doc: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert len(refs) > 500
    for ref in refs:
        resolve(doc, ref)  # a KeyError names the broken reference


def test_create_rollout_has_its_request_and_reply_types(doc: dict[str, Any]) -> None:
    channel = doc["channels"]["sdv.cmd.orchestrator.create"]
    assert channel["address"] == "sdv.cmd.orchestrator.create"
    assert channel["messages"]["request"]["payload"] == {"$ref": "#/components/schemas/CreateRolloutRequest"}
    operation = doc["operations"]["sdv.cmd.orchestrator.create"]
    assert operation["action"] == "receive"
    assert operation["bindings"]["nats"]["queue"] == "sdv-orchestrator"
    reply = resolve(doc, operation["reply"]["messages"][0]["$ref"])
    ok, error = reply["payload"]["oneOf"]
    assert ok["properties"]["result"] == {"$ref": "#/components/schemas/RolloutView"}
    assert resolve(doc, error["$ref"])["properties"]["status"] == {"enum": ["error"]}
    assert "rollout_id" in doc["components"]["schemas"]["RolloutView"]["properties"]
    pause = doc["channels"]["sdv.cmd.orchestrator.pause"]["messages"]["request"]
    assert pause["payload"] == {"$ref": "#/components/schemas/RolloutRef"}


def test_wave_started_events_carry_the_wave_started_body(doc: dict[str, Any]) -> None:
    channel = doc["channels"]["sdv.evt.rollout.WaveStarted"]
    assert channel["address"] == "sdv.evt.rollout.{rollout_id}.WaveStarted"
    assert set(channel["parameters"]) == {"rollout_id"}
    envelope, narrowed = channel["messages"]["orchestrator.WaveStarted.v1"]["payload"]["allOf"]
    assert resolve(doc, envelope["$ref"])["title"] == "WireEnvelope"
    assert narrowed["properties"]["type"] == {"const": "orchestrator.WaveStarted.v1"}
    body = resolve(doc, narrowed["properties"]["data"]["$ref"])
    assert set(body["properties"]) == set(WaveStarted.__struct_fields__)
    assert doc["operations"]["sdv.evt.rollout.WaveStarted"]["x-sdv-party"] == "orchestrator"


def test_every_registered_event_type_and_version_has_a_message(doc: dict[str, Any]) -> None:
    messages = {name for channel in doc["channels"].values() for name in channel["messages"]}
    assert len(suite_event_types()) > 40
    assert set(suite_event_types()) <= messages
    versions = doc["channels"]["sdv.evt.rollout.RollbackStarted"]["messages"]
    assert {"orchestrator.RollbackStarted.v1", "orchestrator.RollbackStarted.v2"} <= set(versions)
    fact = doc["channels"]["sdv.evt.agent.AppHealthy"]
    assert fact["address"] == "sdv.evt.agent.{device_id}.AppHealthy"


def test_kv_buckets_heartbeats_logs_and_device_ops_have_channels(doc: dict[str, Any]) -> None:
    channels = doc["channels"]
    desired, reported = channels["kv.sdv_desired"], channels["kv.sdv_reported"]
    assert desired["address"] == "$KV.sdv_desired.{device_id}"
    assert desired["messages"]["DesiredState"]["payload"] == {"$ref": "#/components/schemas/DesiredState"}
    assert reported["messages"]["ReportedState"]["payload"] == {"$ref": "#/components/schemas/ReportedState"}
    assert channels["sdv.hb"]["address"] == "sdv.hb.{device_id}"
    assert channels["sdv.logs"]["address"] == "sdv.logs.{device_id}.{app}.{stream}"
    assert channels["sdv.logs"]["messages"]["ConsoleLine"]["contentType"] == "text/plain"
    assert channels["sdv.logs"]["parameters"]["stream"]["enum"] == ["stdout", "stderr"]
    logs_op = channels["sdv.device.ops.logs"]
    assert logs_op["address"] == "sdv.device.{device_id}.ops.logs"
    assert logs_op["messages"]["request"]["payload"] == {"$ref": "#/components/schemas/LogsQuery"}
    announce = doc["operations"]["sdv.announce"]
    assert announce["x-sdv-party"] == "registry"


def test_no_message_is_an_empty_payload(doc: dict[str, Any]) -> None:
    assert "EmptyPayload" not in DOCS.read_text()
    for key, channel in doc["channels"].items():
        for name, message in channel["messages"].items():
            if key != "sdv.dlq":  # a dead letter is the original body, whatever it was
                assert message["payload"], (key, name)


def test_every_event_type_maps_to_a_category_its_writer_owns() -> None:
    for full in suite_event_types():
        writer, category = full.split(".")[0], category_of(full)
        if writer == "agent":
            assert category == "agent"
        else:
            assert STREAM_OWNERS[category] == writer, full


def test_an_event_type_of_an_unknown_writer_is_refused_with_where_to_add_it() -> None:
    with pytest.raises(UnmappedEventType, match=r"asyncapi/event_channels\.py"):
        category_of("billing.InvoiceSent.v1")


def test_a_command_handler_must_annotate_its_reply_type() -> None:
    """The document's reply comes from the handler's return annotation, so a handler without
    one cannot be served (it would be an untyped reply in the contract)."""

    async def untyped(req: RolloutRef, info: RequestInfo):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError, match="untyped must annotate its reply type"):
        register_command(NatsRouter(), "test", "untyped", RolloutRef, untyped)


def test_the_registered_reply_type_is_the_handlers_annotation() -> None:
    from sdv_events.bus.routes import registered_commands

    class Answer(msgspec.Struct):
        n: int

    async def typed(req: RolloutRef, info: RequestInfo) -> Answer:
        return Answer(1)

    typed.__annotations__["return"] = Answer  # a local class: resolvable only as an object
    register_command(NatsRouter(), "test", "typed", RolloutRef, typed)
    assert registered_commands()["sdv.cmd.test.typed"].reply_type is Answer
