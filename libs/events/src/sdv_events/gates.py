"""Vehicle-state activation gates: conditions on live VSS signals that must hold before an agent
switches an app to a new version (`Vehicle.Speed == 0`, `...StateOfCharge.Current >= 30`).

A rollout carries its gates as text (what an operator typed, kept readable in events and the
desired document); `parse_gate` turns one into a `Gate` or raises `InvalidGate` naming what is
wrong; `judge` tells whether a set of signal values lets the switch happen and, if not, which
gate holds it back and the value seen. Pure: the agent feeds it values from its databroker
subscription, the orchestrator only checks that gates parse.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from sdv_events.errors import DomainError

Op = Literal["==", "!=", "<", "<=", ">", ">="]
Literal_ = float | bool | str
MAX_GATES = 8

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_GATE_RE = re.compile(r"^\s*(Vehicle(?:\.[A-Za-z0-9_]+)+)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class InvalidGate(DomainError):
    def __init__(self, text: str, why: str) -> None:
        super().__init__(f"activation gate {text!r}: {why}", code="invalid_request")


class Gate(msgspec.Struct, frozen=True, kw_only=True):
    signal: str
    op: Op
    value: Literal_

    def __str__(self) -> str:
        shown = f'"{self.value}"' if isinstance(self.value, str) else _show(self.value)
        return f"{self.signal} {self.op} {shown}"


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """`holds`: every gate is satisfied. Otherwise the first gate that is not, the value seen
    (None: the databroker has no value for it yet) and a sentence an operator can read."""

    holds: bool
    gate: str | None = None
    signal: str | None = None
    value: Literal_ | None = None
    reason: str = ""


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _plain(seen: object) -> Literal_:
    if isinstance(seen, bool | float | str):
        return seen
    if isinstance(seen, int):
        return float(seen)
    return str(seen)


def _literal(text: str, raw: str) -> Literal_:
    if raw in ("true", "false"):
        return raw == "true"
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if _NUMBER_RE.match(raw):
        number = float(raw)
        if math.isfinite(number):
            return number
    raise InvalidGate(text, f"{raw!r} is not a number, true/false or a quoted string")


def parse_gate(text: str) -> Gate:
    if len(text) > 300:
        raise InvalidGate(text[:40] + "…", "longer than 300 characters")
    match = _GATE_RE.match(text)
    if match is None:
        raise InvalidGate(text, "expected `Vehicle.<path> <op> <value>` with op one of == != < <= > >=")
    signal, op, raw = match.groups()
    value = _literal(text, raw)
    if op not in ("==", "!=") and not isinstance(value, float):
        raise InvalidGate(text, f"{op} compares numbers only")
    return Gate(signal=signal, op=op, value=value)  # type: ignore[arg-type]  # the regex


def parse_gates(texts: Sequence[str]) -> list[Gate]:
    if len(texts) > MAX_GATES:
        raise InvalidGate(", ".join(texts)[:60], f"at most {MAX_GATES} gates per rollout")
    return [parse_gate(t) for t in texts]


def _coerce(seen: object, wanted: Literal_) -> object:
    """A databroker value in the gate's terms: ints compare as numbers, and a number's gate
    never matches a string (a type mismatch does not hold)."""
    if isinstance(wanted, bool) or isinstance(seen, bool):
        return seen
    if isinstance(wanted, float) and isinstance(seen, int | float):
        return float(seen)
    return seen


def check(gate: Gate, seen: object) -> bool:
    value = _coerce(seen, gate.value)
    if type(value) is not type(gate.value):
        return False
    return bool(_OPS[gate.op](value, gate.value))


def judge(gates: Sequence[Gate], values: Mapping[str, object]) -> Verdict:
    """Whether `values` (signal path → current value; absent: none yet) open every gate."""
    for gate in gates:
        if gate.signal not in values or values[gate.signal] is None:
            return Verdict(
                holds=False,
                gate=str(gate),
                signal=gate.signal,
                reason=f"waiting for {gate}: {gate.signal} has no value yet",
            )
        seen = values[gate.signal]
        if not check(gate, seen):
            return Verdict(
                holds=False,
                gate=str(gate),
                signal=gate.signal,
                value=_plain(seen),
                reason=f"waiting for {gate}: {gate.signal} is {_show(seen)}",
            )
    return Verdict(holds=True)
