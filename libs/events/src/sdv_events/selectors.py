"""Label selectors, as in Kubernetes: requirements joined by ',' (AND), each one of

    key = value | key == value | key != value | key in (v1, v2) | key notin (v1, v2) | key | !key

`!=` and `notin` also match devices without the key (as Kubernetes does). The empty selector
matches everything. A malformed selector raises `InvalidSelector` with the character position.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sdv_events.errors import DomainError
from sdv_events.labels import KEY_RE, VALUE_RE

Operator = Literal["=", "!=", "in", "notin", "exists", "!exists"]
_TOKEN = re.compile(r"\s*(==|=|!=|!|\(|\)|,|[^\s=!(),]+)")
MAX_SELECTOR = 256


class InvalidSelector(DomainError):
    code = "invalid_request"

    def __init__(self, selector: str, position: int, problem: str) -> None:
        pointer = f"{selector}\n{' ' * position}^"
        super().__init__(f"invalid selector at position {position}: {problem}\n{pointer}")
        self.selector = selector
        self.position = position
        self.problem = problem


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.op:
            case "exists":
                return value is not None
            case "!exists":
                return value is None
            case "=" | "in":
                return value is not None and value in self.values
            case "!=" | "notin":
                return value is None or value not in self.values
        return False  # pragma: no cover - exhaustive above


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


class _Tokens:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[tuple[str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None:  # pragma: no cover - the pattern accepts any non-space character
                raise InvalidSelector(text, pos, "unexpected character")
            self.items.append((match.group(1), match.start(1)))
            pos = match.end()
        self.index = 0

    def peek(self) -> tuple[str, int]:
        return self.items[self.index] if self.index < len(self.items) else ("", len(self.text))

    def take(self) -> tuple[str, int]:
        token = self.peek()
        self.index += 1
        return token

    def fail(self, problem: str, position: int | None = None) -> InvalidSelector:
        return InvalidSelector(self.text, self.peek()[1] if position is None else position, problem)


def _key(tokens: _Tokens) -> str:
    key, pos = tokens.take()
    if not KEY_RE.fullmatch(key):
        raise tokens.fail(f"expected a label key, found {key or 'the end'!r}", pos)
    return key


def _value(tokens: _Tokens) -> str:
    value, pos = tokens.peek()
    if value in {",", ")", ""}:
        return ""  # `key=` selects the empty value, as in Kubernetes
    if not VALUE_RE.fullmatch(value):
        raise tokens.fail(f"invalid label value {value!r}", pos)
    tokens.take()
    return value


def _value_set(tokens: _Tokens) -> tuple[str, ...]:
    token, pos = tokens.take()
    if token != "(":
        raise tokens.fail("expected '(' to open the value list", pos)
    values: list[str] = []
    while True:
        values.append(_value(tokens))  # `()` is the set of the empty value, as in Kubernetes
        token, pos = tokens.take()
        if token == ")":
            return tuple(values)
        if token != ",":
            raise tokens.fail(f"expected ',' or ')' in the value list, found {token or 'the end'!r}", pos)


def _requirement(tokens: _Tokens) -> Requirement:
    token, _ = tokens.peek()
    if token == "!":
        tokens.take()
        return Requirement(_key(tokens), "!exists")
    key = _key(tokens)
    token, pos = tokens.peek()
    if token in {",", ""}:
        return Requirement(key, "exists")
    tokens.take()
    if token in {"=", "=="}:
        return Requirement(key, "=", (_value(tokens),))
    if token == "!=":
        return Requirement(key, "!=", (_value(tokens),))
    if token in {"in", "notin"}:
        return Requirement(key, "in" if token == "in" else "notin", _value_set(tokens))
    raise tokens.fail(f"expected an operator (=, ==, !=, in, notin) after {key!r}, found {token!r}", pos)


def parse_selector(text: str) -> Selector:
    """`"type=jetson-orin, env in (test,dev), !retired"` → a `Selector`; raises `InvalidSelector`."""
    if len(text) > MAX_SELECTOR:
        raise InvalidSelector(text[:MAX_SELECTOR], MAX_SELECTOR, f"longer than {MAX_SELECTOR} characters")
    tokens = _Tokens(text)
    requirements: list[Requirement] = []
    if not tokens.items:
        return Selector()
    while True:
        requirements.append(_requirement(tokens))
        token, pos = tokens.take()
        if token == "":
            return Selector(tuple(requirements))
        if token != ",":
            raise tokens.fail(f"expected ',' between requirements, found {token!r}", pos)
        if tokens.peek()[0] == "":
            raise tokens.fail("a requirement must follow ','")
