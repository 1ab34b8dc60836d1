"""Vehicle-state activation gates (sdv_events.gates): what an operator can write, and when a
vehicle's signal values let an app switch versions."""

import pytest

from sdv_events.gates import InvalidGate, judge, parse_gate, parse_gates

SPEED = "Vehicle.Speed"
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"


def test_a_parked_vehicle_opens_a_speed_gate_and_a_moving_one_does_not() -> None:
    gates = parse_gates([f"{SPEED} == 0"])
    assert judge(gates, {SPEED: 0.0}).holds
    assert judge(gates, {SPEED: 0}).holds  # an int from the databroker compares as a number
    moving = judge(gates, {SPEED: 50.0})
    assert not moving.holds
    assert (moving.signal, moving.value) == (SPEED, 50.0)
    assert moving.reason == f"waiting for {SPEED} == 0: {SPEED} is 50"


def test_every_gate_must_hold_and_the_first_that_does_not_is_named() -> None:
    gates = parse_gates([f"{SPEED} == 0", f"{SOC} >= 30"])
    assert judge(gates, {SPEED: 0, SOC: 30.0}).holds
    low = judge(gates, {SPEED: 0, SOC: 12.5})
    assert (low.holds, low.signal, low.value, low.gate) == (False, SOC, 12.5, f"{SOC} >= 30")


def test_a_signal_without_a_value_keeps_the_gate_closed() -> None:
    verdict = judge(parse_gates([f"{SPEED} == 0"]), {})
    assert not verdict.holds
    assert verdict.value is None
    assert "has no value yet" in verdict.reason
    assert not judge(parse_gates([f"{SPEED} == 0"]), {SPEED: None}).holds


@pytest.mark.parametrize(
    ("text", "values", "holds"),
    [
        (
            "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen == false",
            {"Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": False},
            True,
        ),
        (
            "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen == false",
            {"Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": True},
            False,
        ),
        (
            'Vehicle.Powertrain.Transmission.SelectedGear != "R"',
            {"Vehicle.Powertrain.Transmission.SelectedGear": "P"},
            True,
        ),
        ("Vehicle.Speed < 0.5", {"Vehicle.Speed": 0.4}, True),
        ("Vehicle.Speed <= -1e3", {"Vehicle.Speed": 0}, False),
        ("Vehicle.Speed > 3", {"Vehicle.Speed": 3}, False),
        # a type mismatch never holds: a string where a number is expected, a number for a bool
        ("Vehicle.Speed == 0", {"Vehicle.Speed": "0"}, False),
        ("Vehicle.Cabin.IsLocked == true", {"Vehicle.Cabin.IsLocked": 1}, False),
    ],
)
def test_operators_and_value_types(text: str, values: dict[str, object], holds: bool) -> None:
    assert judge([parse_gate(text)], values).holds is holds


@pytest.mark.parametrize(
    "text",
    [
        "Speed == 0",  # not a VSS path
        "Vehicle.Speed = 0",  # not an operator
        "Vehicle.Speed == fast",  # not a literal
        'Vehicle.Speed >= "0"',  # ordering a string
        "Vehicle.Speed >= true",
        "Vehicle.Speed == nan",
        "Vehicle.Speed == 0; rm -rf /",
        "Vehicle." + "A" * 400 + " == 0",
    ],
)
def test_a_malformed_gate_is_refused_with_the_reason(text: str) -> None:
    with pytest.raises(InvalidGate) as refused:
        parse_gate(text)
    assert refused.value.code == "invalid_request"
    assert "activation gate" in str(refused.value)


def test_a_gate_prints_back_as_it_was_meant() -> None:
    assert str(parse_gate(f"  {SOC}>=30 ")) == f"{SOC} >= 30"
    assert str(parse_gate('Vehicle.X.Gear == "P"')) == 'Vehicle.X.Gear == "P"'
    assert str(parse_gate("Vehicle.X.On == true")) == "Vehicle.X.On == true"


def test_too_many_gates_are_refused() -> None:
    with pytest.raises(InvalidGate, match="at most 8"):
        parse_gates([f"{SPEED} == 0"] * 9)
