"""Label selectors: hypothesis against a naive reference over random label sets, rendering
variants (spacing, `=`/`==`), and typed errors with positions for anything malformed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdv_events.selectors import InvalidSelector, Requirement, Selector, parse_selector

KEYS = ["env", "type", "gpu", "example.com/group", "a_b.c-d"]
VALUES = ["", "test", "prod", "jetson-orin", "x.y_z", "1"]

keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
label_sets = st.dictionaries(keys, values, max_size=5)
space = st.sampled_from(["", " ", "  "])


@st.composite
def requirements(draw: st.DrawFn) -> tuple[str, str, tuple[str, ...]]:
    op = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!exists"]))
    key = draw(keys)
    if op in {"=", "==", "!="}:
        return key, op, (draw(values),)
    if op in {"in", "notin"}:
        return key, op, tuple(draw(st.lists(values, min_size=1, max_size=4)))
    return key, op, ()


def render(reqs: list[tuple[str, str, tuple[str, ...]]], s: st.DrawFn) -> str:
    parts = []
    for key, op, vals in reqs:
        sp = s(space)
        if op == "exists":
            parts.append(key)
        elif op == "!exists":
            parts.append(f"!{sp}{key}")
        elif op in {"in", "notin"}:
            inner = f",{s(space)}".join(vals)
            parts.append(f"{key} {op}{sp}({s(space)}{inner}{s(space)})")
        else:
            parts.append(f"{key}{sp}{op}{s(space)}{vals[0]}")
    return f"{s(space)},{s(space)}".join(parts)


def reference(reqs: list[tuple[str, str, tuple[str, ...]]], labels: dict[str, str]) -> bool:
    """The semantics spelled out plainly (Kubernetes: `!=`/`notin` match a missing key)."""
    for key, op, vals in reqs:
        has = key in labels
        if op == "exists" and not has:
            return False
        if op == "!exists" and has:
            return False
        if op in {"=", "==", "in"} and not (has and labels[key] in vals):
            return False
        if op in {"!=", "notin"} and has and labels[key] in vals:
            return False
    return True


@settings(max_examples=400)
@given(st.data(), st.lists(requirements(), max_size=4), st.lists(label_sets, min_size=1, max_size=8))
def test_parsed_selector_matches_like_the_reference(data, reqs, label_list) -> None:  # type: ignore[no-untyped-def]
    text = render(reqs, data.draw)
    selector = parse_selector(text)
    assert len(selector.requirements) == len(reqs)
    for labels in label_list:
        assert selector.matches(labels) == reference(reqs, labels), (text, labels)


@settings(max_examples=300)
@given(st.text(alphabet="ab=!(), in\tnotx.-_/", max_size=30))
def test_any_text_parses_or_fails_with_a_typed_error_and_position(text: str) -> None:
    error: InvalidSelector | None = None
    try:
        parse_selector(text)
    except InvalidSelector as err:
        error = err
    if error is not None:
        assert 0 <= error.position <= len(text)
        assert error.code == "invalid_request"
        assert "^" in error.message


@pytest.mark.parametrize(("text", "position", "problem"), [
    ("env in (test", 12, "',' or ')'"),
    ("env in (a b)", 10, "',' or ')'"),
    ("env test", 4, "expected an operator"),
    ("=test", 0, "expected a label key"),
    ("env=test,", 9, "must follow ','"),
    ("env=te st", 7, "expected ','"),
    ("env in test", 7, "expected '('"),
    ("env=$x", 4, "invalid label value"),
])
def test_malformed_selectors_say_where_and_what(text: str, position: int, problem: str) -> None:
    with pytest.raises(InvalidSelector) as caught:
        parse_selector(text)
    assert (caught.value.position, problem in caught.value.problem) == (position, True), caught.value


def test_empty_selector_matches_everything() -> None:
    assert parse_selector("  ") == Selector()
    assert parse_selector("").matches({"any": "thing"})


def test_empty_parentheses_are_the_empty_value_as_in_kubernetes() -> None:
    assert parse_selector("env in ()").requirements == (Requirement("env", "in", ("",)),)
    assert parse_selector("env in ()").matches({"env": ""})


def test_inequality_matches_devices_without_the_key() -> None:
    assert parse_selector("env!=prod").requirements == (Requirement("env", "!=", ("prod",)),)
    assert parse_selector("env!=prod").matches({})
    assert parse_selector("env notin (prod)").matches({"type": "x"})
    assert not parse_selector("env in (prod)").matches({})
